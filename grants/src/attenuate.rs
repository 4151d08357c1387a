//! Offline attenuation by token holders.

use biscuit_auth::{BlockBuilder, KeyPair, UnverifiedBiscuit};
use chrono::{DateTime, Utc};
use rand::{CryptoRng, RngCore};

use crate::error::AttenuateError;
use crate::time::floor_secs;
use crate::vocab::{date_term, params, string_set};
use crate::{AccountId, Action, MerchantId, TxWindow};

/// How a holder narrows a token. Every field left `None` leaves that dimension as it is.
///
/// Each given field becomes one `check if` on a *request* fact in a new block, so the result
/// can only allow a subset of what the parent allowed:
/// ```text
/// check if req_account($a), {"acc_1"}.contains($a);
/// check if operation($o), {"balances:read"}.contains($o);
/// check if req_merchant($m), {"m_1"}.contains($m);
/// check if req_tx_range($f, $u), $f >= 2026-02-01T00:00:00Z, $u <= 2026-03-01T00:00:00Z;
/// check if time($t), $t <= 2026-01-01T10:00:00Z;
/// ```
/// A request that names no account (a listing) is evaluated once per granted account, so
/// an account restriction narrows listings too; likewise for merchants and the window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attenuation {
    accounts: Option<Vec<AccountId>>,
    actions: Option<Vec<Action>>,
    merchants: Option<Vec<MerchantId>>,
    window: Option<TxWindow>,
    expires_at: Option<DateTime<Utc>>,
}

impl Attenuation {
    /// Narrows nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only these accounts (an empty list refuses every account).
    pub fn accounts(mut self, accounts: impl IntoIterator<Item = AccountId>) -> Self {
        self.accounts = Some(accounts.into_iter().collect());
        self
    }

    /// Only these actions.
    pub fn actions(mut self, actions: impl IntoIterator<Item = Action>) -> Self {
        self.actions = Some(actions.into_iter().collect());
        self
    }

    /// Only these merchants.
    pub fn merchants(mut self, merchants: impl IntoIterator<Item = MerchantId>) -> Self {
        self.merchants = Some(merchants.into_iter().collect());
        self
    }

    /// Only transaction ranges inside `window`.
    pub fn window(mut self, window: TxWindow) -> Self {
        self.window = Some(window);
        self
    }

    /// Expire no later than `t`.
    pub fn expires_at(mut self, t: DateTime<Utc>) -> Self {
        self.expires_at = Some(floor_secs(t));
        self
    }

    /// Whether no dimension is narrowed.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// The block, built from typed parameters (never by string interpolation).
    pub(crate) fn block(&self) -> Result<BlockBuilder, biscuit_auth::error::Token> {
        let mut b = BlockBuilder::new();
        let none = Default::default;
        if let Some(accounts) = &self.accounts {
            b = b.code_with_params(
                "check if req_account($a), {set}.contains($a)",
                params([("set", string_set(accounts.iter().map(AccountId::as_str)))]),
                none(),
            )?;
        }
        if let Some(actions) = &self.actions {
            b = b.code_with_params(
                "check if operation($o), {set}.contains($o)",
                params([("set", string_set(actions.iter().map(Action::as_str)))]),
                none(),
            )?;
        }
        if let Some(merchants) = &self.merchants {
            b = b.code_with_params(
                "check if req_merchant($m), {set}.contains($m)",
                params([("set", string_set(merchants.iter().map(MerchantId::as_str)))]),
                none(),
            )?;
        }
        if let Some(w) = &self.window {
            b = b.code_with_params(
                "check if req_tx_range($f, $u), $f >= {from}, $u <= {until}",
                params([
                    ("from", date_term(w.from())),
                    ("until", date_term(w.until())),
                ]),
                none(),
            )?;
        }
        if let Some(t) = self.expires_at {
            b = b.check(crate::vocab::expiry_check(t)?)?;
        }
        Ok(b)
    }

    /// The block's Datalog source, as another Biscuit library would write it.
    pub fn datalog(&self) -> Result<String, AttenuateError> {
        self.block()
            .map(|b| b.to_string())
            .map_err(|e| AttenuateError::Biscuit(e.to_string()))
    }
}

/// Appends `attenuation` as a new block, then seals the token if `seal` is set (a sealed token
/// cannot be attenuated further). Needs no key: attenuation is offline.
pub fn attenuate(
    token: &str,
    attenuation: &Attenuation,
    seal: bool,
) -> Result<String, AttenuateError> {
    attenuate_with_rng(token, attenuation, seal, &mut rand::rngs::OsRng)
}

/// [`attenuate`] with a caller-supplied CSPRNG for the next-block key.
pub fn attenuate_with_rng<R: RngCore + CryptoRng>(
    token: &str,
    attenuation: &Attenuation,
    seal: bool,
    rng: &mut R,
) -> Result<String, AttenuateError> {
    if attenuation.is_empty() && !seal {
        return Err(AttenuateError::NothingToNarrow);
    }
    let parsed = UnverifiedBiscuit::from_base64(token.trim())
        .map_err(|e| AttenuateError::Malformed(e.to_string()))?;
    let map_err = |e: biscuit_auth::error::Token| match e {
        biscuit_auth::error::Token::AppendOnSealed | biscuit_auth::error::Token::AlreadySealed => {
            AttenuateError::Sealed
        }
        other => AttenuateError::Biscuit(other.to_string()),
    };
    let mut out = parsed;
    if !attenuation.is_empty() {
        let next = KeyPair::new_with_rng(biscuit_auth::Algorithm::Ed25519, rng);
        out = out
            .append_with_keypair(&next, attenuation.block().map_err(map_err)?)
            .map_err(map_err)?;
    }
    if seal {
        out = out.seal().map_err(map_err)?;
    }
    out.to_base64().map_err(map_err)
}
