//! Signing keys: Ed25519 with a numeric kid, private keys AES-256-GCM-encrypted under the master
//! key (AAD binds each ciphertext to its kid). Keys are decrypted once when loaded, never per
//! request. Rotation makes a new active key; the old one keeps being published until every token
//! it signed has expired (`publish_until` = rotation time + access-token TTL + 1 minute).

use platform::storage::models::SigningKeyStatus;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Duration, SubsecRound, Utc};
use diesel::prelude::*;
use grants::{BiscuitKeys, KeySet, PublishedKey, SigningKey};
use platform::audit::{Actor, NewEvent, Target};
use platform::crypto::{FieldCipher, MasterKey};
use platform::storage::schema::signing_keys;
use platform::storage::{AnyConnection, StorageError, StorageResult, write_tx};

const PURPOSE: &str = "signing-keys";

/// What a key signs. Each purpose has its own active key and rotation; kids are shared, so a kid
/// names one key whatever its purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    /// Biscuit tokens (published at `/.well-known/biscuit-keys`).
    Biscuit,
    /// Security Event Tokens, JWS EdDSA (published at `/ssf/jwks`).
    SecurityEvents,
}

impl KeyPurpose {
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Biscuit => "biscuit",
            KeyPurpose::SecurityEvents => "security_events",
        }
    }
}

fn aad(kid: i64) -> String {
    platform::crypto::signing_key_aad(kid)
}

/// The keys this instance signs and verifies with.
#[derive(Debug, Clone)]
pub struct LoadedKeys {
    pub active: Arc<SigningKey>,
    pub published: Vec<PublishedKey>,
    pub keyset: Arc<KeySet>,
}

/// Thread-safe holder, refreshed from the database after a rotation (on any instance).
#[derive(Debug, Clone)]
pub struct KeyRing {
    inner: Arc<RwLock<LoadedKeys>>,
}

impl KeyRing {
    pub fn new(loaded: LoadedKeys) -> Self {
        Self {
            inner: Arc::new(RwLock::new(loaded)),
        }
    }

    pub fn current(&self) -> LoadedKeys {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn replace(&self, loaded: LoadedKeys) {
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = loaded;
    }

    pub fn document(&self) -> BiscuitKeys {
        BiscuitKeys {
            keys: self.current().published,
        }
    }
}

fn storage_err(e: impl std::fmt::Display) -> StorageError {
    StorageError::Migration(format!("signing key: {e}"))
}

/// Loads the keys of `purpose`, creating the first one if there is none.
pub fn load_or_init(
    conn: &mut AnyConnection,
    master: &MasterKey,
    now: DateTime<Utc>,
    purpose: KeyPurpose,
) -> StorageResult<LoadedKeys> {
    let cipher = master.cipher(PURPOSE);
    let has_active: i64 = signing_keys::table
        .filter(signing_keys::status.eq(SigningKeyStatus::Active.as_str()))
        .filter(signing_keys::purpose.eq(purpose.as_str()))
        .count()
        .get_result(conn)?;
    if has_active == 0 {
        // Two instances starting at once: the primary key or the one-active-key-per-purpose
        // index makes the loser's insert fail; it then simply loads the winner's key.
        let created = write_tx(conn, |c| {
            let kid = next_kid(c)?;
            insert_key(c, &cipher, kid, now, purpose, Actor::system("startup"))
        });
        if let Err(e) = created {
            tracing::debug!(error = %e, "initial signing key already created elsewhere");
        }
    }
    load(conn, &cipher, now, purpose)
}

fn next_kid(conn: &mut AnyConnection) -> StorageResult<i64> {
    let max_kid: Option<i64> = signing_keys::table
        .select(diesel::dsl::max(signing_keys::kid))
        .first(conn)?;
    Ok(max_kid.unwrap_or(0) + 1)
}

fn insert_key(
    conn: &mut AnyConnection,
    cipher: &FieldCipher,
    kid: i64,
    now: DateTime<Utc>,
    purpose: KeyPurpose,
    actor: Actor,
) -> StorageResult<SigningKey> {
    let kid_u32 = u32::try_from(kid).map_err(storage_err)?;
    let key = SigningKey::generate(kid_u32);
    let private = cipher
        .encrypt(&key.private_bytes(), &aad(kid))
        .map_err(storage_err)?;
    diesel::insert_into(signing_keys::table)
        .values((
            signing_keys::kid.eq(kid),
            signing_keys::algorithm.eq("Ed25519"),
            signing_keys::public_key.eq(key.public_key().to_string()),
            signing_keys::private_key_enc.eq(private),
            signing_keys::status.eq(SigningKeyStatus::Active.as_str()),
            signing_keys::created_at.eq(now.naive_utc().trunc_subsecs(0)),
            signing_keys::purpose.eq(purpose.as_str()),
        ))
        .execute(conn)?;
    NewEvent::new(
        actor,
        "signing_key.created",
        Target::new("signing_key", kid.to_string()),
    )
    .details(serde_json::json!({ "algorithm": "Ed25519", "purpose": purpose.as_str() }))
    .record(conn, now)?;
    Ok(key)
}

/// Reads the active key of `purpose` and every key of it still to be published.
pub fn load(
    conn: &mut AnyConnection,
    cipher: &FieldCipher,
    now: DateTime<Utc>,
    purpose: KeyPurpose,
) -> StorageResult<LoadedKeys> {
    type Row = (
        i64,
        String,
        String,
        chrono::NaiveDateTime,
        Option<chrono::NaiveDateTime>,
    );
    let rows: Vec<Row> = signing_keys::table
        .filter(signing_keys::purpose.eq(purpose.as_str()))
        .filter(
            signing_keys::status
                .eq(SigningKeyStatus::Active.as_str())
                .or(signing_keys::publish_until.gt(now.naive_utc())),
        )
        .order(signing_keys::kid.desc())
        .select((
            signing_keys::kid,
            signing_keys::status,
            signing_keys::private_key_enc,
            signing_keys::created_at,
            signing_keys::publish_until,
        ))
        .load(conn)?;
    let mut active = None;
    let mut published = Vec::new();
    for (kid, status, private_enc, created_at, publish_until) in rows {
        let kid_u32 = u32::try_from(kid).map_err(storage_err)?;
        let secret = cipher
            .decrypt(&private_enc, &aad(kid))
            .map_err(storage_err)?;
        let key = SigningKey::from_private_bytes(kid_u32, &secret).map_err(storage_err)?;
        published.push(key.published(
            Some(created_at.and_utc()),
            publish_until.map(|t| t.and_utc()),
        ));
        if status == SigningKeyStatus::Active.as_str() && active.is_none() {
            active = Some(Arc::new(key));
        }
    }
    let active = active.ok_or(StorageError::NotFound)?;
    let keyset = Arc::new(KeySet::new(published.clone()).map_err(storage_err)?);
    Ok(LoadedKeys {
        active,
        published,
        keyset,
    })
}

/// Rotates the keys of `purpose`: a new active key, the old one retired but published for
/// `access_ttl` + 1 minute (what it signed is verified, or has expired, by then). Runs inside
/// the caller's write transaction (`write_tx`), with whatever else must change with it.
pub fn rotate(
    c: &mut AnyConnection,
    master: &MasterKey,
    now: DateTime<Utc>,
    access_ttl: Duration,
    purpose: KeyPurpose,
    actor: Actor,
) -> StorageResult<u32> {
    let cipher = master.cipher(PURPOSE);
    {
        let previous: Option<i64> = signing_keys::table
            .filter(signing_keys::purpose.eq(purpose.as_str()))
            .filter(signing_keys::status.eq(SigningKeyStatus::Active.as_str()))
            .select(signing_keys::kid)
            .first(c)
            .optional()?;
        let next = next_kid(c)?;
        let publish_until = (now + access_ttl + Duration::minutes(1))
            .naive_utc()
            .trunc_subsecs(0);
        diesel::update(
            signing_keys::table
                .filter(signing_keys::status.eq(SigningKeyStatus::Active.as_str()))
                .filter(signing_keys::purpose.eq(purpose.as_str())),
        )
        .set((
            signing_keys::status.eq(SigningKeyStatus::Retired.as_str()),
            signing_keys::retired_at.eq(now.naive_utc()),
            signing_keys::publish_until.eq(publish_until),
        ))
        .execute(c)?;
        let key = insert_key(c, &cipher, next, now, purpose, actor.clone())?;
        NewEvent::new(
            actor,
            "signing_key.rotated",
            Target::new("signing_key", next.to_string()),
        )
        .details(serde_json::json!({ "previous_kid": previous, "purpose": purpose.as_str() }))
        .record(c, now)?;
        Ok(key.kid())
    }
}
