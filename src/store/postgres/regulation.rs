//! Failed-login regulation records, shared by every replica on the database.

use tokio_postgres::Row;

use super::sql::{begin, commit, corrupt, execute, get, int, query_one, query_opt};
use super::{PgStore, Regulation, StoreError};

impl PgStore {
    /// The regulation record of an account, if any.
    pub fn regulation(&self, account: &str) -> Result<Option<Regulation>, StoreError> {
        self.run("read login regulation", |pool| async move {
            let client = get(&pool).await?;
            let row = query_opt(
                &client,
                "SELECT state FROM gateway_login_regulation WHERE account = $1",
                &[&account],
            )
            .await?;
            row.map(|r| regulation_of(&r)).transpose()
        })
    }

    /// Read-modify-write of an account's regulation record under a row lock, so failures
    /// counted by several replicas at once all count.
    pub fn update_regulation(
        &self,
        account: &str,
        now: u64,
        change: impl FnOnce(&mut Regulation),
    ) -> Result<Regulation, StoreError> {
        self.run("update login regulation", |pool| async move {
            let mut client = get(&pool).await?;
            let txn = begin(&mut client).await?;
            let empty = serde_json::to_string(&Regulation::default())
                .map_err(|_| corrupt("cannot encode regulation"))?;
            execute(
                &txn,
                "INSERT INTO gateway_login_regulation (account, state, touched) VALUES ($1, $2, $3)
                 ON CONFLICT (account) DO NOTHING",
                &[&account, &empty, &int(now)],
            )
            .await?;
            let row = query_one(
                &txn,
                "SELECT state FROM gateway_login_regulation WHERE account = $1 FOR UPDATE",
                &[&account],
            )
            .await?;
            let mut state = regulation_of(&row)?;
            change(&mut state);
            state.touched = now;
            let text =
                serde_json::to_string(&state).map_err(|_| corrupt("cannot encode regulation"))?;
            execute(
                &txn,
                "UPDATE gateway_login_regulation SET state = $2, touched = $3 WHERE account = $1",
                &[&account, &text, &int(now)],
            )
            .await?;
            commit(txn).await?;
            Ok(state)
        })
    }
}

fn regulation_of(row: &Row) -> Result<Regulation, StoreError> {
    let text: &str = row.get(0);
    serde_json::from_str(text).map_err(|_| corrupt("gateway_login_regulation: undecodable state"))
}
