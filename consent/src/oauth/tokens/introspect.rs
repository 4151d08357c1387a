//! RFC 7662 introspection on the transactional path.

use super::*;
use platform::storage::models::RefreshTokenStatus;

/// What an active answer depends on (what `oauth::answers` checks before reusing it).
#[derive(Debug, Clone)]
pub struct Basis {
    pub client: OAuthClient,
    pub grant_id: String,
    pub revocation_ids: Vec<String>,
    pub token_expires_at: DateTime<Utc>,
    pub grant_expires_at: DateTime<Utc>,
}

/// RFC 7662 response.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Introspection {
    pub active: bool,
    pub client_id: Option<String>,
    pub sub: Option<String>,
    pub scope: Option<String>,
    pub exp: Option<i64>,
    pub iss: Option<String>,
    #[schema(value_type = Option<crate::openapi::values::IntrospectedTokenType>)]
    pub token_type: Option<String>,
    pub grant_id: Option<String>,
    /// The grant's status.
    #[schema(value_type = Option<platform::storage::models::GrantStatus>)]
    pub grant_status: Option<String>,
    pub authorization_details: Option<Vec<AccountAccessDetail>>,
    /// RFC 9449 section 6.2 and RFC 8705 section 3.2: the token is bound to this DPoP key
    /// and/or TLS client certificate; serve it only with a proof that key signed, over a
    /// connection with that certificate.
    pub cnf: Option<Confirmation>,
}

/// RFC 7800 confirmation: the key or certificate a token is bound to.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Confirmation {
    /// RFC 7638 SHA-256 thumbprint of the DPoP public key (base64url).
    pub jkt: Option<String>,
    /// RFC 8705 SHA-256 thumbprint of the TLS client certificate (base64url).
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: Option<String>,
}

impl Confirmation {
    /// The confirmation of a token bound to `jkt` and/or `x5t`; `None` for a bearer token.
    pub fn of(jkt: Option<String>, x5t: Option<String>) -> Option<Self> {
        (jkt.is_some() || x5t.is_some()).then_some(Self { jkt, x5t_s256: x5t })
    }
}

/// A minted access token found by the SHA-256 of its text.
#[derive(Clone)]
pub(super) struct Minted {
    pub(super) revocation_id: String,
    pub(super) expires_at: NaiveDateTime,
    /// Its revocation id is on the revocation list.
    pub(super) revoked: bool,
    pub(super) grant: GrantRecord,
    /// The grant's client.
    pub(super) client: OAuthClient,
    /// The DPoP key the token is bound to.
    pub(super) dpop_jkt: Option<String>,
    /// The TLS client certificate the token is bound to.
    pub(super) cnf_x5t: Option<String>,
}

impl Minted {
    /// What introspection found, as asked by the token's own client: `None` once the token has
    /// expired.
    pub(super) fn found(self, now: DateTime<Utc>) -> Option<Found> {
        (self.expires_at > now.naive_utc()).then(|| Found {
            grant: self.grant,
            client: self.client,
            token_type: "access_token",
            exp: self.expires_at.and_utc(),
            token_revoked: self.revoked,
            minted_rid: Some(self.revocation_id),
            cnf_jkt: self.dpop_jkt,
            cnf_x5t: self.cnf_x5t,
            allows: Allows::Grant,
        })
    }
}

/// Minted tokens by hash, each with its grant, the grant's client and its revocation status: one
/// query for any number of hashes. Pairs each with its hash.
pub(super) fn load_minteds(
    c: &mut AnyConnection,
    hashes: &[String],
) -> Result<Vec<(String, Minted)>, StorageError> {
    type Row = (
        Option<String>,
        String,
        NaiveDateTime,
        Option<i64>,
        Option<String>,
        Option<String>,
        GrantRecord,
        ClientRow,
    );
    let rows: Vec<Row> = issued_tokens::table
        .inner_join(grant_rows::table.inner_join(clients::table))
        .left_join(
            revocations::table
                .on(revocations::revocation_id.eq(issued_tokens::revocation_id.nullable())),
        )
        .filter(issued_tokens::token_hash.eq_any(hashes))
        .select((
            issued_tokens::token_hash,
            issued_tokens::revocation_id,
            issued_tokens::expires_at,
            revocations::seq.nullable(),
            issued_tokens::dpop_jkt,
            issued_tokens::cnf_x5t,
            GrantRecord::as_select(),
            ClientRow::as_select(),
        ))
        .load(c)?;
    Ok(rows
        .into_iter()
        .filter_map(
            |(hash, revocation_id, expires_at, revoked, dpop_jkt, cnf_x5t, grant, client)| {
                let minted = Minted {
                    revocation_id,
                    expires_at,
                    revoked: revoked.is_some(),
                    grant,
                    client: client.into(),
                    dpop_jkt,
                    cnf_x5t,
                };
                Some((hash?, minted))
            },
        )
        .collect())
}

/// [`load_minteds`] for one hash.
pub(super) fn load_minted(
    c: &mut AnyConnection,
    hash: &str,
) -> Result<Option<Minted>, StorageError> {
    Ok(load_minteds(c, &[hash.to_string()])?.pop().map(|(_, m)| m))
}

/// What introspection found with the database alone.
#[derive(Debug)]
pub enum Introspected {
    /// The answer (and, for a minted token, what it rests on, so it may be reused).
    Answer(Box<(Introspection, Option<Basis>)>),
    /// An answer reused from the answer cache, shared with it.
    Reused(crate::oauth::answers::Answer),
    /// Not a token we minted as is (attenuated, or foreign): the client is authenticated;
    /// verify the token offline ([`verify_offline`], off this connection), then call
    /// [`introspect_verified`].
    Unverified(Box<OAuthClient>),
}

/// RFC 7662: a token is active when it is ours, unexpired, not revoked, its grant is authorized
/// and unexpired, and it belongs to the asking client. Anything else is `{"active": false}`.
pub fn introspect(
    c: &mut AnyConnection,
    svc: &OAuthService,
    creds: &ClientCredentials,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Introspected, OAuthError> {
    let inactive = Introspected::Answer(Box::new((Introspection::default(), None)));
    if token.is_empty() || token.len() > MAX_PRESENTED_TOKEN {
        oauth_clients::authenticate(c, creds)?;
        return Ok(inactive);
    }
    // As in `refresh`: the token's row brings its grant's client, which usually is the asking
    // client, so one query serves authentication and the answer.
    let hash = PlainToken::from_presented(token).hash();
    let found = if is_refresh_token(token) {
        let row = load_refresh(c, hash.as_str())?;
        let client = oauth_clients::authenticate_with(c, creds, row.as_ref().map(|r| &r.client))?;
        let Some(r) = row else {
            return Ok(inactive);
        };
        Found {
            token_revoked: r.status != RefreshTokenStatus::Active.as_str()
                || r.expires_at <= now.naive_utc(),
            exp: r.expires_at.and_utc(),
            grant: r.grant,
            client,
            token_type: "refresh_token",
            minted_rid: None,
            cnf_jkt: r.dpop_jkt,
            // A refresh token is bound to the client, not to one certificate (RFC 8705 4).
            cnf_x5t: None,
            allows: Allows::Grant,
        }
    } else if let Some(minted) = load_minted(c, hash.as_str())? {
        // A token exactly as we minted it is found by its hash (its signature was made by us,
        // and nobody can produce another string with the same SHA-256): one indexed lookup that
        // also brings its grant and whether it was revoked.
        let client = oauth_clients::authenticate_with(c, creds, Some(&minted.client))?;
        let Some(found) = minted.found(now) else {
            return Ok(inactive);
        };
        // Asked by another client, the answer is inactive (`Found::answer`).
        Found { client, ..found }
    } else {
        // Attenuated (or foreign) tokens: authenticate; the caller verifies offline.
        return Ok(Introspected::Unverified(Box::new(
            oauth_clients::authenticate(c, creds)?,
        )));
    };
    conclude(c, svc, found, now).map(|answer| Introspected::Answer(Box::new(answer)))
}

/// Introspection of a token [`verify_offline`] found (`None`: not a valid token of ours), for a
/// client [`introspect`] authenticated.
pub fn introspect_verified(
    c: &mut AnyConnection,
    svc: &OAuthService,
    client: OAuthClient,
    verified: Option<OurToken>,
    now: DateTime<Utc>,
) -> Result<(Introspection, Option<Basis>), OAuthError> {
    let Some(t) = verified else {
        return Ok((Introspection::default(), None));
    };
    let revoked: i64 = revocations::table
        .filter(revocations::revocation_id.eq_any(&t.revocation_ids))
        .count()
        .get_result(c)?;
    let Some(grant) = load_grant(c, &t.grant)? else {
        return Ok((Introspection::default(), None));
    };
    let found = Found {
        grant,
        client,
        token_type: "access_token",
        exp: t.expires_at,
        token_revoked: revoked > 0,
        minted_rid: None,
        cnf_jkt: t.cnf_jkt,
        cnf_x5t: t.cnf_x5t,
        allows: t.allows.map_or(Allows::Unstated, Allows::Exactly),
    };
    conclude(c, svc, found, now)
}

/// Records use of a live grant (dormancy is measured from it) and builds the answer.
pub(super) fn conclude(
    c: &mut AnyConnection,
    svc: &OAuthService,
    found: Found,
    now: DateTime<Utc>,
) -> Result<(Introspection, Option<Basis>), OAuthError> {
    // An introspection is use of the grant, recorded at most once a minute: the common case
    // costs no write. Best effort: a failed write (e.g. SQLite busy during a sweep) must not
    // fail the answer.
    if found.is_live(now)
        && use_due(&found.grant, now)
        && let Err(e) = diesel::update(
            grant_rows::table
                .filter(grant_rows::id.eq(&found.grant.id))
                .filter(
                    grant_rows::last_used_at
                        .is_null()
                        .or(grant_rows::last_used_at.lt(use_cutoff(now))),
                ),
        )
        .set(grant_rows::last_used_at.eq(now.naive_utc().trunc_subsecs(0)))
        .execute(c)
    {
        tracing::warn!(error = %e, "introspection: recording use of the grant failed");
    }
    found.answer(svc, now)
}

/// A token introspection found, for an authenticated client.
pub(super) struct Found {
    pub(super) grant: GrantRecord,
    pub(super) client: OAuthClient,
    pub(super) token_type: &'static str,
    pub(super) exp: DateTime<Utc>,
    pub(super) token_revoked: bool,
    /// The revocation id of a minted access token found by its hash (the answer may be reused).
    pub(super) minted_rid: Option<String>,
    /// The DPoP key the token is bound to.
    pub(super) cnf_jkt: Option<String>,
    /// The TLS client certificate the token is bound to.
    pub(super) cnf_x5t: Option<String>,
    /// What the token allows.
    pub(super) allows: Allows,
}

/// What an active answer says the token allows.
pub(super) enum Allows {
    /// A token as minted: its grant's scope.
    Grant,
    /// An attenuated token of the documented forms: what it allows, exactly.
    Exactly(AccessRequest),
    /// An attenuated token with Datalog of the holder's own: nothing is stated (no `scope`, no
    /// `authorization_details`), since one entry could say more than the token allows; the
    /// resource server verifies it offline, for the request at hand.
    Unstated,
}

impl Found {
    /// Active: the asking client's own token, not revoked, of an authorized and unexpired grant
    /// (the token's own expiry is checked where it is found).
    pub(super) fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.grant.client_id == self.client.id
            && !self.token_revoked
            && self.grant.status == GrantStatus::Authorized.as_str()
            && self.grant.expires_at > now.naive_utc()
    }

    /// The RFC 7662 answer (no I/O).
    pub(super) fn answer(
        self,
        svc: &OAuthService,
        now: DateTime<Utc>,
    ) -> Result<(Introspection, Option<Basis>), OAuthError> {
        if self.grant.client_id != self.client.id {
            return Ok((Introspection::default(), None));
        }
        let live = self.is_live(now);
        let Found {
            grant,
            client,
            token_type,
            exp,
            minted_rid,
            cnf_jkt,
            cnf_x5t,
            allows,
            ..
        } = self;
        if !live {
            // Tell the owning client why: the grant's status (e.g. revoked by the customer).
            return Ok((
                Introspection {
                    grant_id: Some(grant.id),
                    grant_status: Some(grant.status),
                    ..Introspection::default()
                },
                None,
            ));
        }
        // An attenuated token reports what it allows, never its grant's whole scope: RFC 7662
        // callers act on `scope` and `authorization_details`.
        let access = match allows {
            Allows::Grant => Some(AccessRequest::from_stored(&grant.authorization_details)?),
            Allows::Exactly(allows) => Some(allows),
            Allows::Unstated => None,
        };
        let basis = minted_rid.map(|rid| Basis {
            client,
            grant_id: grant.id.clone(),
            revocation_ids: vec![rid],
            token_expires_at: exp,
            grant_expires_at: grant.expires_at.and_utc(),
        });
        let answer = Introspection {
            active: true,
            client_id: Some(grant.client_id),
            sub: Some(grant.customer_id),
            scope: access.as_ref().map(AccessRequest::scope_string),
            exp: Some(exp.timestamp()),
            iss: Some(svc.issuer.clone()),
            token_type: Some(token_type.into()),
            grant_id: Some(grant.id),
            grant_status: Some(grant.status),
            authorization_details: access.as_ref().map(|a| vec![a.to_detail()]),
            cnf: Confirmation::of(cnf_jkt, cnf_x5t),
        };
        Ok((answer, basis))
    }
}
