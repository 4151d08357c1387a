//! Audit events of HSM operations (an HSM-held master key): one per derivation of a
//! per-purpose key (`hsm.derive`) and per key generation (`hsm.generate_key`), failed ones too.
//! They name the module, token, key label, purpose and mechanism; never key material or the PIN.

use serde_json::json;

use super::{Actor, NewEvent, Target, record};
use crate::crypto::CustodyEvent;
use crate::storage::{AnyConnection, StorageResult};

/// Records `events` on `conn`, each at the time it happened. Returns how many.
pub fn record_custody(conn: &mut AnyConnection, events: &[CustodyEvent]) -> StorageResult<usize> {
    for e in events {
        let (actor, action) = match e.operation {
            "generate_key" => (Actor::system("cli"), "hsm.generate_key"),
            _ => (Actor::system("key-custody"), "hsm.derive"),
        };
        let target = Target::new(
            "hsm_key",
            format!("{}/{}", e.location.token_label, e.location.key_label),
        );
        let event = NewEvent::new(actor, action, target).details(json!({
            "module": e.location.module,
            "token_label": e.location.token_label,
            "key_label": e.location.key_label,
            "purpose": e.purpose,
            "key_use": e.key_use,
            "mechanism": e.mechanism,
            "outcome": if e.error.is_some() { "failed" } else { "ok" },
            "error": e.error,
            "pid": std::process::id(),
        }));
        record(conn, &event, e.at)?;
    }
    Ok(events.len())
}
