//! The master key in an HSM, through PKCS#11 (`security.pkcs11`).
//!
//! The key is a sensitive, non-extractable secret key (CKK_GENERIC_SECRET, 256 bits) on a token,
//! found by its label. It never leaves the token: each purpose's key is computed inside it as
//! HMAC-SHA-256 (CKM_SHA256_HMAC) of a fixed, domain-separated label, and only that per-purpose
//! result enters this process (see `MasterKey`), once per purpose per process. Every such
//! derivation, and key generation, is logged and journalled for the audit log
//! ([`CustodyJournal`]).
//!
//! Error messages name the module, the token and the key, never the PIN.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use chrono::{DateTime, Utc};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::config::Pkcs11Settings;

mod admin;

use admin::{check_suitable, report};
pub use admin::{generate_key, inspect_key};

/// The master key in the HSM could not be reached or used.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    #[error("cannot load the PKCS#11 module {module}: {reason}")]
    Module { module: String, reason: String },
    #[error(
        "no initialised token labelled {token_label:?} in the PKCS#11 module {module} \
         (tokens present: {present})"
    )]
    NoToken {
        module: String,
        token_label: String,
        present: String,
    },
    #[error("{count} tokens are labelled {token_label:?} in the PKCS#11 module {module}")]
    AmbiguousToken {
        module: String,
        token_label: String,
        count: usize,
    },
    #[error("login to the HSM token {token_label:?} failed: {reason}")]
    Login { token_label: String, reason: String },
    #[error(
        "no secret key labelled {key_label:?} on the HSM token {token_label:?}; create it with \
         `consent keys hsm-generate`"
    )]
    NoKey {
        token_label: String,
        key_label: String,
    },
    #[error("{count} secret keys are labelled {key_label:?} on the HSM token {token_label:?}")]
    AmbiguousKey {
        token_label: String,
        key_label: String,
        count: usize,
    },
    #[error("a key labelled {key_label:?} already exists on the HSM token {token_label:?}")]
    KeyExists {
        token_label: String,
        key_label: String,
    },
    #[error("the HSM key {key_label:?} cannot hold the master key: {reason}")]
    UnsuitableKey { key_label: String, reason: String },
    #[error("HSM operation {operation} failed on token {token_label:?}: {reason}")]
    Operation {
        operation: &'static str,
        token_label: String,
        reason: String,
    },
}

/// Where the key is: what logs and audit events name (never the PIN).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyLocation {
    pub module: String,
    pub token_label: String,
    pub key_label: String,
}

impl KeyLocation {
    fn of(settings: &Pkcs11Settings) -> Self {
        Self {
            module: settings.module.display().to_string(),
            token_label: settings.token_label.clone(),
            key_label: settings.key_label.clone(),
        }
    }
}

/// What the token says about the key (`consent keys hsm-status`, `hsm-generate`).
#[derive(Debug, Clone, Serialize)]
pub struct HsmKeyReport {
    #[serde(flatten)]
    pub location: KeyLocation,
    pub key_type: String,
    pub sensitive: bool,
    pub extractable: bool,
    pub always_sensitive: Option<bool>,
    pub never_extractable: Option<bool>,
    /// Whether the token hands out CKA_VALUE (it must not).
    pub value_readable: bool,
}

/// One HSM operation, waiting to be written to the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct CustodyEvent {
    pub at: DateTime<Utc>,
    /// `derive` or `generate_key`.
    pub operation: &'static str,
    #[serde(flatten)]
    pub location: KeyLocation,
    /// The derived key's purpose (`kyc-pii`, `audit-chain`, ...) and use (`cipher` or `mac`).
    pub purpose: Option<String>,
    pub key_use: Option<&'static str>,
    pub mechanism: &'static str,
    /// `None` when it succeeded.
    pub error: Option<String>,
}

/// HSM operations not yet in the audit log. Derivations happen where a key is first needed, often
/// inside another transaction or before the audit log exists, so they are queued here and written
/// by the audit linker (`AuditLog::link_now`, every second in `serve`) and by one-off commands
/// before they link.
#[derive(Debug, Clone, Default)]
pub struct CustodyJournal(Arc<Mutex<Vec<CustodyEvent>>>);

impl CustodyJournal {
    fn push(&self, event: CustodyEvent) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
    }

    /// Everything queued so far, emptying the queue.
    pub fn take(&self) -> Vec<CustodyEvent> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts events back at the front (their write failed; the next flush retries).
    pub fn restore(&self, mut events: Vec<CustodyEvent>) {
        let mut queue = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        events.append(&mut queue);
        *queue = events;
    }
}

/// The mechanism every derivation uses.
const DERIVE_MECHANISM: &str = "CKM_SHA256_HMAC";
/// Key size made by `hsm-generate` (bytes).
const KEY_BYTES: u32 = 32;

/// A logged-in session on the token and the key's handle in it.
struct Connection {
    session: Session,
    key: ObjectHandle,
}

/// Per-purpose secrets by `(key use, purpose)`.
type DerivedKeys = HashMap<(&'static str, String), Zeroizing<[u8; 32]>>;

/// The master key's handle in the token. Derived per-purpose secrets are cached (zeroized on
/// drop), so the token is asked once per purpose per process.
pub(crate) struct HsmMasterKey {
    location: KeyLocation,
    context: Pkcs11,
    slot: Slot,
    pin: AuthPin,
    connection: Mutex<Option<Connection>>,
    cache: RwLock<DerivedKeys>,
    journal: CustodyJournal,
}

impl std::fmt::Debug for HsmMasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmMasterKey")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl HsmMasterKey {
    /// Loads the module, finds the token and the key, logs in, and checks that the key is
    /// sensitive, not extractable and usable for HMAC.
    pub(crate) fn open(settings: &Pkcs11Settings) -> Result<Self, HsmError> {
        let location = KeyLocation::of(settings);
        let context = load_module(&settings.module)?;
        let slot = find_token(&context, &location)?;
        let pin = AuthPin::from(settings.pin.expose().as_str());
        let connection = connect(&context, slot, &pin, &location)?;
        let report = report(&connection.session, connection.key, &location)?;
        check_suitable(&report)?;
        tracing::info!(
            module = %location.module,
            token = %location.token_label,
            key = %location.key_label,
            "master key held in the HSM"
        );
        Ok(Self {
            location,
            context,
            slot,
            pin,
            connection: Mutex::new(Some(connection)),
            cache: RwLock::default(),
            journal: CustodyJournal::default(),
        })
    }

    pub(crate) fn location(&self) -> &KeyLocation {
        &self.location
    }

    pub(crate) fn journal(&self) -> &CustodyJournal {
        &self.journal
    }

    /// HMAC-SHA-256 of `label` under the master key, computed by the token (cached per
    /// `(key_use, purpose)`).
    pub(crate) fn derive(
        &self,
        key_use: &'static str,
        purpose: &str,
        label: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, HsmError> {
        let cache_key = (key_use, purpose.to_string());
        if let Some(k) = self.cached(&cache_key) {
            return Ok(k);
        }
        // One derivation at a time: a purpose asked for by many threads at once is derived once.
        let mut connection = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(k) = self.cached(&cache_key) {
            return Ok(k);
        }
        let result = self.hmac(&mut connection, label);
        let error = result.as_ref().err().map(ToString::to_string);
        match &error {
            None => tracing::info!(
                operation = "derive",
                purpose,
                key_use,
                token = %self.location.token_label,
                key = %self.location.key_label,
                "HSM derived a per-purpose key"
            ),
            Some(e) => tracing::error!(
                operation = "derive",
                purpose,
                key_use,
                token = %self.location.token_label,
                key = %self.location.key_label,
                error = %e,
                "HSM derivation failed"
            ),
        }
        self.journal.push(CustodyEvent {
            at: Utc::now(),
            operation: "derive",
            location: self.location.clone(),
            purpose: Some(purpose.to_string()),
            key_use: Some(key_use),
            mechanism: DERIVE_MECHANISM,
            error,
        });
        let derived = result?;
        self.cache
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(cache_key, derived.clone());
        Ok(derived)
    }

    fn cached(&self, cache_key: &(&'static str, String)) -> Option<Zeroizing<[u8; 32]>> {
        self.cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(cache_key)
            .cloned()
    }

    /// Signs on the current session; if that fails (the token was restarted, the session
    /// closed), logs in on a new session once and tries again.
    fn hmac(
        &self,
        connection: &mut Option<Connection>,
        label: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, HsmError> {
        if let Some(c) = connection.as_ref() {
            if let Ok(mac) = sign(c, label, &self.location) {
                return Ok(mac);
            }
            tracing::warn!(
                token = %self.location.token_label,
                "HSM session failed; logging in again"
            );
        }
        *connection = None;
        let fresh = connect(&self.context, self.slot, &self.pin, &self.location)?;
        let mac = sign(&fresh, label, &self.location)?;
        *connection = Some(fresh);
        Ok(mac)
    }
}

fn sign(
    c: &Connection,
    label: &[u8],
    location: &KeyLocation,
) -> Result<Zeroizing<[u8; 32]>, HsmError> {
    let mac = Zeroizing::new(
        c.session
            .sign(&Mechanism::Sha256Hmac, c.key, label)
            .map_err(|e| operation_error("C_Sign (CKM_SHA256_HMAC)", location, &e))?,
    );
    let out: [u8; 32] = mac.as_slice().try_into().map_err(|_| HsmError::Operation {
        operation: "C_Sign (CKM_SHA256_HMAC)",
        token_label: location.token_label.clone(),
        reason: format!("expected 32 bytes, the token returned {}", mac.len()),
    })?;
    Ok(Zeroizing::new(out))
}

fn operation_error(operation: &'static str, location: &KeyLocation, e: &Pkcs11Error) -> HsmError {
    HsmError::Operation {
        operation,
        token_label: location.token_label.clone(),
        reason: e.to_string(),
    }
}

fn load_module(module: &Path) -> Result<Pkcs11, HsmError> {
    let module_error = |reason: String| HsmError::Module {
        module: module.display().to_string(),
        reason,
    };
    if !module.is_file() {
        return Err(module_error("no such file".into()));
    }
    let context = Pkcs11::new(module).map_err(|e| module_error(e.to_string()))?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Another handle in this process initialised it already (a command that generates the
        // key and then starts the platform): the module is shared, and ready.
        Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(context),
        Err(e) => Err(module_error(format!("C_Initialize: {e}"))),
    }
}

fn find_token(context: &Pkcs11, location: &KeyLocation) -> Result<Slot, HsmError> {
    let slots = context
        .get_slots_with_initialized_token()
        .map_err(|e| operation_error("C_GetSlotList", location, &e))?;
    let mut present = Vec::new();
    let mut matching = Vec::new();
    for slot in slots {
        let Ok(info) = context.get_token_info(slot) else {
            continue;
        };
        if info.label() == location.token_label {
            matching.push(slot);
        }
        present.push(format!("{:?}", info.label()));
    }
    match matching.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(HsmError::NoToken {
            module: location.module.clone(),
            token_label: location.token_label.clone(),
            present: if present.is_empty() {
                "none".into()
            } else {
                present.join(", ")
            },
        }),
        more => Err(HsmError::AmbiguousToken {
            module: location.module.clone(),
            token_label: location.token_label.clone(),
            count: more.len(),
        }),
    }
}

/// A logged-in read-write session (key generation writes; derivation does not need it, but one
/// kind of session keeps this simple).
fn login(
    context: &Pkcs11,
    slot: Slot,
    pin: &AuthPin,
    location: &KeyLocation,
) -> Result<Session, HsmError> {
    let session = context
        .open_rw_session(slot)
        .map_err(|e| operation_error("C_OpenSession", location, &e))?;
    match session.login(UserType::User, Some(pin)) {
        // The login state is per process and token: another session of ours logged in already.
        Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(e) => Err(HsmError::Login {
            token_label: location.token_label.clone(),
            reason: match e {
                Pkcs11Error::Pkcs11(RvError::PinIncorrect, _) => "the PIN is incorrect".into(),
                Pkcs11Error::Pkcs11(RvError::PinLocked, _) => "the PIN is locked".into(),
                Pkcs11Error::Pkcs11(RvError::PinExpired, _) => "the PIN has expired".into(),
                other => other.to_string(),
            },
        }),
    }
}

fn find_key(session: &Session, location: &KeyLocation) -> Result<Vec<ObjectHandle>, HsmError> {
    session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(location.key_label.as_bytes().to_vec()),
        ])
        .map_err(|e| operation_error("C_FindObjects", location, &e))
}

fn connect(
    context: &Pkcs11,
    slot: Slot,
    pin: &AuthPin,
    location: &KeyLocation,
) -> Result<Connection, HsmError> {
    let session = login(context, slot, pin, location)?;
    let key = match find_key(&session, location)?.as_slice() {
        [key] => *key,
        [] => {
            return Err(HsmError::NoKey {
                token_label: location.token_label.clone(),
                key_label: location.key_label.clone(),
            });
        }
        more => {
            return Err(HsmError::AmbiguousKey {
                token_label: location.token_label.clone(),
                key_label: location.key_label.clone(),
                count: more.len(),
            });
        }
    };
    Ok(Connection { session, key })
}
