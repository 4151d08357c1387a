//! PAR, the authorization endpoint, and the customer's consent decision.
//!
//! `request`: PAR and `/oauth2/authorize`; `consent`: the consent page's data; `decision`: the
//! customer's decision; `narrowing`: what the customer chose and the grant it makes.

mod consent;
mod decision;
mod grant_management;
mod loaded;
mod narrowing;
mod request;

pub use consent::*;
pub use decision::*;
pub use grant_management::*;
pub use narrowing::*;
pub use request::*;

use ::grants::{AccountId, Action, MerchantId, TxWindow};
use chrono::{DateTime, Duration, SubsecRound, Utc};
use diesel::prelude::*;
use platform::audit::{Actor, NewEvent, Target};
use platform::crypto::{PlainToken, random_id};
use platform::storage::models::{AuthorizationRequestStatus, GrantStatus};
use platform::storage::schema::{
    authorization_codes, authorization_requests, grant_rows, merchants,
};
use platform::storage::{AnyConnection, StorageError, write_tx_as};
use serde::{Deserialize, Serialize};

use super::OAuthService;
use super::clients::{self, OAuthClient, Registration, RequestPolicy};
use super::error::OAuthError;
use super::rar::{AccessRequest, parse_instant};
