//! Reading a pending authorization request for the consent page and the decision.
//!
//! Both need the request, its client and whether the customer is a test customer; the page
//! also binds the request to the customer on first view and shows the developer's verified legal
//! name, and both offer the customer's accounts. On PostgreSQL all of that is one statement
//! ([`READ_SQL`]: the binding is a data-modifying CTE); on SQLite it is read with diesel, one
//! query for the request and one for each of the rest when it is needed.

use diesel::sql_types::{Bool, Nullable, Text, Timestamp};

use super::consent::{ConsentError, Row};
use super::*;
use crate::sandbox::AccountView;

/// A pending request as read, with what was read alongside it.
pub(super) struct Loaded {
    pub(super) row: Row,
    pub(super) client: OAuthClient,
    pub(super) test_customer: bool,
    /// PostgreSQL: the binding was tried in the read itself (the row's `customer_id` is then the
    /// customer it is bound to after the read, or none when it could not be bound).
    pub(super) bind_tried: bool,
    pub(super) alongside: Alongside,
}

/// What may have been read with the request; what was not is read when asked for.
pub(super) struct Alongside {
    /// All the customer's accounts, when read with the request.
    accounts: Option<Vec<AccountView>>,
    /// The developer's approved KYC submission (id, encrypted legal name), when read with the
    /// request: `Some(None)` when there is none.
    kyc: Option<Option<(String, String)>>,
}

impl Alongside {
    /// The customer's accounts, ordered by id.
    pub(super) fn accounts(
        &mut self,
        c: &mut AnyConnection,
        customer_id: &str,
    ) -> Result<Vec<AccountView>, ConsentError> {
        match self.accounts.take() {
            Some(accounts) => Ok(accounts),
            None => Ok(crate::sandbox::customer_accounts(c, customer_id)?),
        }
    }

    /// The developer's KYC-verified legal name (decrypted), when their KYC is approved.
    pub(super) fn verified_legal_name(
        &self,
        c: &mut AnyConnection,
        svc: &OAuthService,
        developer: &str,
    ) -> Result<Option<String>, ConsentError> {
        let key = &svc.platform.master_key;
        Ok(match &self.kyc {
            Some(Some((id, enc))) => developer_portal::approved_legal_name(key, developer, id, enc),
            Some(None) => None,
            // The portal owns that data and its decryption.
            None => developer_portal::developer_legal_name(c, key, developer)?,
        })
    }
}

/// Reads a request while it is pending and unexpired (else [`ConsentError::NotPending`]).
/// With `bind`, on PostgreSQL, the same statement binds an unbound request to `customer_id` when
/// the client is active and may be consented to by this customer (see [`Loaded::bind_tried`]).
pub(super) fn load(
    c: &mut AnyConnection,
    id: &str,
    customer_id: &str,
    now: DateTime<Utc>,
    bind: bool,
) -> Result<Loaded, ConsentError> {
    if let AnyConnection::Postgresql(pg) = c {
        let found: Option<Read> = diesel::sql_query(READ_SQL)
            .bind::<Text, _>(id)
            .bind::<Text, _>(customer_id)
            .bind::<Timestamp, _>(now.naive_utc())
            .bind::<Bool, _>(bind)
            .get_result(pg)
            .optional()?;
        let read = found.ok_or(ConsentError::NotPending)?;
        let accounts = match read.accounts.as_deref() {
            None => vec![],
            Some(json) => serde_json::from_str::<Vec<(String, String, String, String)>>(json)
                .map_err(|e| diesel::result::Error::DeserializationError(Box::new(e)))?
                .into_iter()
                .map(|(id, name, masked_number, currency)| AccountView {
                    id,
                    name,
                    masked_number,
                    currency,
                })
                .collect(),
        };
        return Ok(Loaded {
            row: read.request,
            client: OAuthClient::from(read.client),
            test_customer: read.is_test == Some(true),
            bind_tried: bind,
            alongside: Alongside {
                accounts: Some(accounts),
                kyc: Some(read.kyc_id.zip(read.legal_name_enc)),
            },
        });
    }
    use platform::storage::schema::{clients as client_rows, customers};
    let found: Option<(Row, clients::ClientRow, Option<bool>)> = authorization_requests::table
        .inner_join(client_rows::table.on(client_rows::id.eq(authorization_requests::client_id)))
        .left_join(customers::table.on(customers::id.eq(customer_id)))
        .filter(authorization_requests::id.eq(id))
        .filter(authorization_requests::status.eq(AuthorizationRequestStatus::Pending.as_str()))
        .filter(authorization_requests::expires_at.gt(now.naive_utc()))
        .select((
            Row::as_select(),
            clients::ClientRow::as_select(),
            customers::is_test.nullable(),
        ))
        .first(c)
        .optional()?;
    let (row, client, is_test) = found.ok_or(ConsentError::NotPending)?;
    Ok(Loaded {
        row,
        client: OAuthClient::from(client),
        test_customer: is_test == Some(true),
        bind_tried: false,
        alongside: Alongside {
            accounts: None,
            kyc: None,
        },
    })
}

/// One row of [`READ_SQL`].
#[derive(QueryableByName)]
struct Read {
    #[diesel(embed)]
    request: Row,
    #[diesel(embed)]
    client: clients::ClientRow,
    #[diesel(sql_type = Nullable<Bool>)]
    is_test: Option<bool>,
    /// A JSON array of `[id, name, masked_number, currency]`, ordered by id; null for none.
    #[diesel(sql_type = Nullable<Text>)]
    accounts: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    kyc_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    legal_name_enc: Option<String>,
}

/// The request `$1` while pending and unexpired at `$3`, with its client, whether customer `$2`
/// is a test customer, their accounts and the client's developer's approved KYC submission.
/// With `$4`, an unbound request is bound to `$2` first when its client is active and either in
/// production or `$2` is a test customer (the checks the transactional path makes before it
/// binds); the SELECT sees the rows as they were before the statement, so the bound customer is
/// taken from the update's own result. A request bound meanwhile by someone else is not bound
/// again (`customer_id IS NULL` is checked again on the locked row).
const READ_SQL: &str = "\
WITH bound AS ( \
    UPDATE authorization_requests r SET customer_id = $2 \
    FROM clients cl \
    WHERE $4 AND r.id = $1 AND r.customer_id IS NULL AND r.status = 'pending' \
      AND r.expires_at > $3 AND cl.id = r.client_id AND cl.status = 'active' \
      AND (cl.environment = 'production' \
           OR EXISTS (SELECT 1 FROM customers cu WHERE cu.id = $2 AND cu.is_test)) \
    RETURNING r.customer_id \
) \
SELECT r.client_id, r.redirect_uri, r.state, r.code_challenge, r.authorization_details, \
       COALESCE(r.customer_id, (SELECT customer_id FROM bound)) AS customer_id, \
       r.dpop_jkt, r.grant_id, r.grant_action, \
       cl.id, cl.developer_id, cl.name, cl.environment, cl.redirect_uris, cl.auth_method, \
       cl.allowed_actions, cl.status, cl.secret_hash, cl.jwks, cl.dpop_bound_access_tokens, \
       cl.tls_client_auth_subject_dn, cl.tls_client_certificate_bound_access_tokens, \
       (SELECT cu.is_test FROM customers cu WHERE cu.id = $2) AS is_test, \
       (SELECT json_agg(json_build_array(a.id, a.name, a.masked_number, a.currency) \
                        ORDER BY a.id)::text \
          FROM accounts a WHERE a.customer_id = $2) AS accounts, \
       k.id AS kyc_id, k.legal_name_enc \
FROM authorization_requests r \
JOIN clients cl ON cl.id = r.client_id \
LEFT JOIN LATERAL ( \
    SELECT id, legal_name_enc FROM kyc_submissions \
    WHERE developer_id = cl.developer_id AND status = 'approved' LIMIT 1 \
) k ON true \
WHERE r.id = $1 AND r.status = 'pending' AND r.expires_at > $3";
