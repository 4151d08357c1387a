//! Test helper for tests/integration/hsm.rs, run as a child process (so that the test can point
//! SoftHSM2 at its own token directory with `SOFTHSM2_CONF`): talks to the token with cryptoki
//! directly, independently of the service's code.
//!
//! `hsm-probe <module> <token label> <pin> <key label> read-value` asks the token for the key's
//! value (C_GetAttributeValue, CKA_VALUE) and prints what it answered as JSON.
//! `hsm-probe ... create-extractable` makes a key with that label that may leave the token
//! (the service must refuse it).

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [module, token, pin, label, mode] = args.as_slice() else {
        eprintln!(
            "usage: hsm-probe <module> <token label> <pin> <key label> read-value|create-extractable"
        );
        std::process::exit(2);
    };
    let pkcs11 = Pkcs11::new(module).expect("load the PKCS#11 module");
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slot = pkcs11
        .get_slots_with_initialized_token()
        .expect("slots")
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).is_ok_and(|i| i.label() == token))
        .expect("the token");
    let session = pkcs11.open_rw_session(slot).expect("session");
    session
        .login(UserType::User, Some(&AuthPin::from(pin.as_str())))
        .expect("login");
    match mode.as_str() {
        "read-value" => {
            let keys = session
                .find_objects(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])
                .expect("find the key");
            let key = *keys.first().expect("the key exists");
            // The length query of C_GetAttributeValue: CKR_ATTRIBUTE_SENSITIVE for a key that
            // cannot leave the token.
            let info = session
                .get_attribute_info(key, &[AttributeType::Value])
                .expect("C_GetAttributeValue");
            // And the value itself: nothing may come back.
            let value = session
                .get_attributes(key, &[AttributeType::Value])
                .expect("C_GetAttributeValue");
            let returned = value.iter().any(|a| matches!(a, Attribute::Value(_)));
            let info = match info.first() {
                Some(AttributeInfo::Sensitive) => "sensitive".to_string(),
                Some(AttributeInfo::Available(n)) => format!("available({n})"),
                other => format!("{other:?}"),
            };
            println!(
                "{}",
                serde_json::json!({ "value_info": info, "value_returned": returned })
            );
        }
        "create-extractable" => {
            session
                .generate_key(
                    &Mechanism::GenericSecretKeyGen,
                    &[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::GENERIC_SECRET),
                        Attribute::ValueLen(std::ffi::c_ulong::from(32u32).into()),
                        Attribute::Label(label.as_bytes().to_vec()),
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(false),
                        Attribute::Extractable(true),
                        Attribute::Sign(true),
                    ],
                )
                .expect("C_GenerateKey");
            println!("{{\"created\": true}}");
        }
        other => {
            eprintln!("unknown mode {other}");
            std::process::exit(2);
        }
    }
}
