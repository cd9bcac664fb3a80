//! SQL helpers shared by the PostgreSQL backend: one error mapping that never quotes data,
//! integer conversions between Rust and `bigint`, and query calls on cached prepared
//! statements.

use deadpool_postgres::{GenericClient, Object, Pool, Transaction};
use tokio_postgres::{Row, Statement};

use super::StoreError;

/// Describes a driver error without quoting data: DETAIL lines can carry key values.
pub(super) fn db_error(what: &str, e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        return StoreError::Io(format!("{what}: {} ({})", db.message(), db.code().code()));
    }
    if e.is_closed() {
        return StoreError::Unavailable(format!("{what}: connection closed"));
    }
    // The causes (I/O, TLS) say what went wrong and hold no data.
    let mut text = format!("{what}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    StoreError::Unavailable(text)
}

pub(super) fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => db_error("connect to the database", e),
        PoolError::Timeout(kind) => {
            StoreError::Unavailable(format!("no database connection ({kind:?} timed out)"))
        }
        other => StoreError::Unavailable(format!("no database connection: {other}")),
    }
}

/// Unix seconds and counters are `u64` in the gateway and `bigint` in PostgreSQL.
pub(super) fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn uint(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(super) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

pub(super) fn count(n: impl TryInto<usize>) -> usize {
    n.try_into().unwrap_or(usize::MAX)
}

pub(super) async fn get(pool: &Pool) -> Result<Object, StoreError> {
    pool.get().await.map_err(pool_error)
}

pub(super) async fn begin(client: &mut Object) -> Result<Transaction<'_>, StoreError> {
    client
        .transaction()
        .await
        .map_err(|e| db_error("begin transaction", e))
}

pub(super) async fn commit(txn: Transaction<'_>) -> Result<(), StoreError> {
    txn.commit().await.map_err(|e| db_error("commit", e))
}

type Params<'a> = [&'a (dyn tokio_postgres::types::ToSql + Sync)];

/// A prepared statement, cached per connection: each SQL text is parsed once per connection.
pub(super) async fn prepare(c: &impl GenericClient, sql: &str) -> Result<Statement, StoreError> {
    c.prepare_cached(sql)
        .await
        .map_err(|e| db_error("prepare", e))
}

pub(super) async fn query(
    c: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
) -> Result<Vec<Row>, StoreError> {
    let stmt = prepare(c, sql).await?;
    c.query(&stmt, params)
        .await
        .map_err(|e| db_error("query", e))
}

pub(super) async fn query_opt(
    c: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
) -> Result<Option<Row>, StoreError> {
    let stmt = prepare(c, sql).await?;
    c.query_opt(&stmt, params)
        .await
        .map_err(|e| db_error("query", e))
}

pub(super) async fn query_one(
    c: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
) -> Result<Row, StoreError> {
    let stmt = prepare(c, sql).await?;
    c.query_one(&stmt, params)
        .await
        .map_err(|e| db_error("query", e))
}

pub(super) async fn execute(
    c: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
) -> Result<u64, StoreError> {
    let stmt = prepare(c, sql).await?;
    c.execute(&stmt, params)
        .await
        .map_err(|e| db_error("execute", e))
}
