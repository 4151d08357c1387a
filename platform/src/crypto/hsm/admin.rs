//! What the token says about the key, and the key's generation inside it: `consent keys
//! hsm-status` and `hsm-generate`, and the check [`super::HsmMasterKey::open`] makes.

use chrono::Utc;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::Session;
use cryptoki::types::AuthPin;

use super::{
    CustodyEvent, HsmError, HsmKeyReport, KEY_BYTES, KeyLocation, connect, find_key, find_token,
    load_module, login, operation_error,
};
use crate::config::Pkcs11Settings;

pub(super) fn report(
    session: &Session,
    key: ObjectHandle,
    location: &KeyLocation,
) -> Result<HsmKeyReport, HsmError> {
    let attributes = session
        .get_attributes(
            key,
            &[
                AttributeType::KeyType,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
            ],
        )
        .map_err(|e| operation_error("C_GetAttributeValue", location, &e))?;
    let mut r = HsmKeyReport {
        location: location.clone(),
        key_type: "unknown".into(),
        // Absent attributes count against the key.
        sensitive: false,
        extractable: true,
        always_sensitive: None,
        never_extractable: None,
        value_readable: true,
    };
    for a in attributes {
        match a {
            Attribute::KeyType(t) => r.key_type = t.to_string(),
            Attribute::Sensitive(v) => r.sensitive = v,
            Attribute::Extractable(v) => r.extractable = v,
            Attribute::AlwaysSensitive(v) => r.always_sensitive = Some(v),
            Attribute::NeverExtractable(v) => r.never_extractable = Some(v),
            _ => {}
        }
    }
    // Asks for the key's value itself; the token must refuse.
    let value = session
        .get_attribute_info(key, &[AttributeType::Value])
        .map_err(|e| operation_error("C_GetAttributeValue", location, &e))?;
    r.value_readable = matches!(value.first(), Some(AttributeInfo::Available(_)));
    Ok(r)
}

impl HsmKeyReport {
    /// Whether the key may hold the master key: a generic-secret (or HMAC) key that is
    /// sensitive, not extractable, and whose value the token refuses to hand out.
    pub fn check(&self) -> Result<(), HsmError> {
        check_suitable(self)
    }
}

pub(super) fn check_suitable(r: &HsmKeyReport) -> Result<(), HsmError> {
    let unsuitable = |reason: &str| {
        Err(HsmError::UnsuitableKey {
            key_label: r.location.key_label.clone(),
            reason: reason.into(),
        })
    };
    let generic = KeyType::GENERIC_SECRET.to_string();
    let hmac = KeyType::SHA256_HMAC.to_string();
    if r.key_type != generic && r.key_type != hmac {
        return unsuitable(&format!(
            "it is a {} key, not {generic} or {hmac}",
            r.key_type
        ));
    }
    if !r.sensitive || r.extractable || r.value_readable {
        return unsuitable(
            "it can leave the token (it must be CKA_SENSITIVE and not CKA_EXTRACTABLE); \
             create one with `consent keys hsm-generate`",
        );
    }
    Ok(())
}

/// Reads the key's attributes (`consent keys hsm-status`). Uses no key material.
pub fn inspect_key(settings: &Pkcs11Settings) -> Result<HsmKeyReport, HsmError> {
    let location = KeyLocation::of(settings);
    let context = load_module(&settings.module)?;
    let slot = find_token(&context, &location)?;
    let pin = AuthPin::from(settings.pin.expose().as_str());
    let c = connect(&context, slot, &pin, &location)?;
    report(&c.session, c.key, &location)
}

/// Generates the master key inside the token (`consent keys hsm-generate`): 256-bit generic
/// secret, on the token, private, sensitive, never extractable, not modifiable, usable only to
/// sign (HMAC). Refuses when a key with the label exists. Returns the token's view of the new key
/// and the event for the audit log.
pub fn generate_key(settings: &Pkcs11Settings) -> Result<(HsmKeyReport, CustodyEvent), HsmError> {
    let location = KeyLocation::of(settings);
    let context = load_module(&settings.module)?;
    let slot = find_token(&context, &location)?;
    let pin = AuthPin::from(settings.pin.expose().as_str());
    let session = login(&context, slot, &pin, &location)?;
    if !find_key(&session, &location)?.is_empty() {
        return Err(HsmError::KeyExists {
            token_label: location.token_label.clone(),
            key_label: location.key_label.clone(),
        });
    }
    // On the token, private, sensitive, usable to sign (HMAC); never extractable, never modified,
    // and good for nothing else.
    let granted = [
        Attribute::Token,
        Attribute::Private,
        Attribute::Sensitive,
        Attribute::Sign,
    ]
    .map(|attribute| attribute(true));
    let refused = [
        Attribute::Extractable,
        Attribute::Modifiable,
        Attribute::Verify,
        Attribute::Encrypt,
        Attribute::Decrypt,
        Attribute::Wrap,
        Attribute::Unwrap,
        Attribute::Derive,
    ]
    .map(|attribute| attribute(false));
    let template: Vec<Attribute> = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::ValueLen(std::ffi::c_ulong::from(KEY_BYTES).into()),
        Attribute::Label(location.key_label.as_bytes().to_vec()),
    ]
    .into_iter()
    .chain(granted)
    .chain(refused)
    .collect();
    let key = session
        .generate_key(&Mechanism::GenericSecretKeyGen, &template)
        .map_err(|e| operation_error("C_GenerateKey", &location, &e))?;
    tracing::info!(
        operation = "generate_key",
        module = %location.module,
        token = %location.token_label,
        key = %location.key_label,
        "HSM generated the master key"
    );
    let r = report(&session, key, &location)?;
    check_suitable(&r)?;
    let event = CustodyEvent {
        at: Utc::now(),
        operation: "generate_key",
        location,
        purpose: None,
        key_use: None,
        mechanism: "CKM_GENERIC_SECRET_KEY_GEN",
        error: None,
    };
    Ok((r, event))
}
