//! The change feed: appending changes in commit order, reading them back, and the `LISTEN`
//! connection that wakes replicas when another one commits.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Transaction;
use tokio::sync::Notify;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, Socket};

use super::sql::{corrupt, db_error, execute, get, int, query, query_one, uint};
use super::{Change, PgStore, StoreError};

/// The notification channel.
const CHANNEL: &str = "gateway_changes";

/// Advisory lock key serialising change-feed appends ("gw-chang").
const CHANGES_LOCK: i64 = 0x6777_2d63_6861_6e67;

/// How long the listener waits before reconnecting.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

impl PgStore {
    /// Poked when another replica (or this one) committed a change; see
    /// [`crate::store::Store::change_hint`].
    pub fn change_hint(&self) -> Arc<Notify> {
        self.inner.hint.clone()
    }

    pub fn last_change(&self) -> Result<u64, StoreError> {
        self.run("read the change feed", |pool| async move {
            let client = get(&pool).await?;
            let row = query_one(
                &client,
                "SELECT coalesce(max(seq), 0) FROM gateway_changes",
                &[],
            )
            .await?;
            Ok(uint(row.get(0)))
        })
    }

    pub fn changes_since(&self, seq: u64, limit: usize) -> Result<Vec<(u64, Change)>, StoreError> {
        self.run("read the change feed", |pool| async move {
            let client = get(&pool).await?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = query(
                &client,
                "SELECT seq, change FROM gateway_changes WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&int(seq), &limit],
            )
            .await?;
            rows.iter()
                .map(|row| {
                    let text: String = row.get(1);
                    let change = serde_json::from_str(&text)
                        .map_err(|_| corrupt("gateway_changes: undecodable change"))?;
                    Ok((uint(row.get(0)), change))
                })
                .collect()
        })
    }
}

/// Keeps a `LISTEN` connection open and pokes `hint` on every notification and after every
/// (re)connect, forever (the task ends with the store's runtime).
pub(super) async fn listen<T>(config: tokio_postgres::Config, tls: T, hint: Arc<Notify>)
where
    T: MakeTlsConnect<Socket> + Clone,
    T::Stream: Send + 'static,
{
    let mut healthy = true;
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let poke = hint.clone();
                let driver = tokio::spawn(async move {
                    loop {
                        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                            Some(Ok(AsyncMessage::Notification(_))) => poke.notify_one(),
                            Some(Ok(_)) => {}
                            Some(Err(e)) => return Some(e),
                            None => return None,
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        if !healthy {
                            tracing::info!("listening for store changes again");
                        }
                        // Anything committed while we were not listening is read now.
                        hint.notify_one();
                        if let Ok(Some(e)) = driver.await {
                            tracing::warn!(error = %e, "store change listener lost its connection");
                        }
                    }
                    Err(e) => {
                        driver.abort();
                        if healthy {
                            tracing::warn!(error = %db_error("LISTEN", e), "store change listener failed");
                        }
                    }
                }
                healthy = false;
                drop(client);
            }
            Err(e) => {
                if healthy {
                    tracing::warn!(error = %db_error("connect", e), "store change listener cannot connect; retrying");
                }
                healthy = false;
            }
        }
        // Wake the poller anyway: it reads by sequence number and finds whatever was missed.
        hint.notify_one();
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

/// Appends a change with the next sequence number and notifies listeners at commit. The
/// advisory lock, held until the transaction ends, makes numbers gapless and visible in order.
pub(super) async fn append_change(
    txn: &Transaction<'_>,
    change: &Change,
) -> Result<u64, StoreError> {
    execute(txn, "SELECT pg_advisory_xact_lock($1)", &[&CHANGES_LOCK]).await?;
    let text = serde_json::to_string(change).map_err(|_| corrupt("cannot encode change"))?;
    let row = query_one(
        txn,
        "INSERT INTO gateway_changes (seq, change)
         SELECT coalesce(max(seq), 0) + 1, $1 FROM gateway_changes
         RETURNING seq",
        &[&text],
    )
    .await?;
    let seq: i64 = row.get(0);
    execute(
        txn,
        "SELECT pg_notify($1, $2)",
        &[&CHANNEL, &seq.to_string()],
    )
    .await?;
    Ok(uint(seq))
}
