//! API token writes on PostgreSQL: create, list, revoke, with the SQLite store's semantics
//! and messages. At most one active token carries a given name (the partial unique index
//! `api_tokens_active_name`), so a name can be reused once its token is revoked.

use tokio_postgres::error::SqlState;

use super::{PgStore, wait};
use crate::rows::now_us;
use crate::{NewToken, StoreError, TokenRecord, TokenScope};

/// Ordered by creation time, then id compared bytewise as SQLite does.
const TOKENS: &str = "SELECT id, name, scope, secret_sha256, created_at_us, revoked_at_us
    FROM api_tokens ORDER BY created_at_us, id COLLATE \"C\"";

impl PgStore {
    /// [`crate::Store::create_token`].
    pub(crate) fn create_token(&mut self, t: &NewToken) -> Result<(), StoreError> {
        if t.id.is_empty() || t.name.is_empty() {
            return Err(StoreError::Invalid(
                "a token needs a non-empty id and name".to_owned(),
            ));
        }
        let now = now_us();
        let inserted = self.run(|c| {
            wait(c.execute(
                "INSERT INTO api_tokens (id, name, scope, secret_sha256, created_at_us)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &t.id,
                    &t.name,
                    &t.scope.as_str(),
                    &t.secret_sha256.as_slice(),
                    &now,
                ],
            ))
        });
        match inserted {
            Ok(_) => Ok(()),
            // The active-name index; a reused id violates the primary key instead.
            Err(StoreError::Postgres(e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                match e.as_db_error().and_then(|d| d.constraint()) {
                    Some("api_tokens_active_name") => Err(StoreError::TokenExists {
                        name: t.name.clone(),
                    }),
                    Some("api_tokens_pkey") => Err(StoreError::Invalid(format!(
                        "a token with id {:?} exists",
                        t.id
                    ))),
                    _ => Err(e.into()),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// [`crate::Store::tokens`].
    pub(crate) fn tokens(&mut self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = self.run(|c| wait(c.query(TOKENS, &[])))?;
        rows.iter()
            .map(|row| {
                let id: String = row.get(0);
                let scope: String = row.get(2);
                let scope: TokenScope = scope.parse().map_err(|_| {
                    StoreError::Corrupt(format!("token {id:?} has scope {scope:?}"))
                })?;
                Ok(TokenRecord {
                    name: row.get(1),
                    scope,
                    secret_sha256: row.get(3),
                    created_at_us: row.get(4),
                    revoked_at_us: row.get(5),
                    id,
                })
            })
            .collect()
    }

    /// [`crate::Store::revoke_token`].
    pub(crate) fn revoke_token(&mut self, name: &str) -> Result<bool, StoreError> {
        let now = now_us();
        let changed = self.run(|c| {
            wait(c.execute(
                "UPDATE api_tokens SET revoked_at_us = $2 WHERE name = $1 AND revoked_at_us IS NULL",
                &[&name, &now],
            ))
        })?;
        Ok(changed > 0)
    }
}
