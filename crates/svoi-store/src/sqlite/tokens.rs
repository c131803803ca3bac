//! API token writes on the writer handle: create, list, revoke. Only a SHA-256 of each
//! token's secret is stored; at most one active token carries a given name (a partial unique
//! index), so a name can be reused once its token is revoked.

use rusqlite::ffi;

use super::SqliteStore;
use crate::reader::{token_record, token_select};
use crate::rows::now_us;
use crate::{NewToken, StoreError, TokenRecord};

impl SqliteStore {
    /// Inserts; an active token with the same name -> [`StoreError::TokenExists`] (message
    /// "a token named {name:?} exists: revoke it first").
    ///
    /// An empty id or name, or an id already used by any token (revoked ones included), is
    /// [`StoreError::Invalid`]. The creation time is now.
    pub fn create_token(&mut self, t: &NewToken) -> Result<(), StoreError> {
        if t.id.is_empty() || t.name.is_empty() {
            return Err(StoreError::Invalid(
                "a token needs a non-empty id and name".to_owned(),
            ));
        }
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO api_tokens (id, name, scope, secret_sha256, created_at_us)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute((
                &t.id,
                &t.name,
                t.scope.as_str(),
                t.secret_sha256.as_slice(),
                now_us(),
            ));
        match inserted {
            Ok(_) => Ok(()),
            // The active-name index; a reused id violates the primary key instead.
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE =>
            {
                Err(StoreError::TokenExists {
                    name: t.name.clone(),
                })
            }
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
            {
                Err(StoreError::Invalid(format!(
                    "a token with id {:?} exists",
                    t.id
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// All tokens, revoked included, ordered by created_at_us, id.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(concat!(token_select!(), " ORDER BY created_at_us, id"))?;
        let mut rows = stmt.query([])?;
        let mut tokens = Vec::new();
        while let Some(row) = rows.next()? {
            tokens.push(token_record(row)?);
        }
        Ok(tokens)
    }

    /// Sets revoked_at_us = now on the active token of that name; Ok(false) if there is none.
    pub fn revoke_token(&mut self, name: &str) -> Result<bool, StoreError> {
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE api_tokens SET revoked_at_us = ?2
                 WHERE name = ?1 AND revoked_at_us IS NULL",
            )?
            .execute((name, now_us()))?;
        Ok(changed > 0)
    }
}
