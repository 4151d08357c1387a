//! `grants`: inspect, attenuate and verify consent-service Biscuit tokens.

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use grants::{
    AccountId, Action, Attenuation, KeySet, MerchantId, NoRevocationCheck, Request, TxWindow,
    Verifier,
};

/// Inspect, attenuate (narrow) and verify Biscuit access tokens of the consent service.
///
/// TOKEN may be `-` to read the token from standard input (keeps it out of shell history).
#[derive(Debug, Parser)]
#[command(name = "grants", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a token's blocks (Datalog), key id, revocation ids and granted scope.
    ///
    /// Does NOT check the signature: use `verify` for that.
    Inspect {
        /// The token (base64url), or `-` for stdin.
        token: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Narrow a token offline by appending a block; prints the new token.
    ///
    /// Each option restricts one dimension; repeat --account/--action/--merchant to allow
    /// several values. The result can never do more than the input token.
    Attenuate {
        /// The token (base64url), or `-` for stdin.
        token: String,
        #[command(flatten)]
        narrow: Narrow,
        /// Seal the result so that it cannot be attenuated further.
        #[arg(long)]
        seal: bool,
    },
    /// Verify a token for a request against published keys; exit 0 if allowed, 1 if not.
    Verify {
        /// The token (base64url), or `-` for stdin.
        token: String,
        /// Keys: an http(s) URL of `/.well-known/biscuit-keys`, or a file with that JSON.
        #[arg(long, value_name = "URL|FILE")]
        keys: String,
        /// The action, e.g. `transactions:read`.
        #[arg(long)]
        operation: String,
        /// The account (omit for a listing: the allowed accounts are printed).
        #[arg(long)]
        account: Option<String>,
        /// Start of the requested transaction range (RFC 3339 UTC); needs --to.
        #[arg(long, requires = "to")]
        from: Option<String>,
        /// End of the requested transaction range (RFC 3339 UTC); needs --from.
        #[arg(long, requires = "from")]
        to: Option<String>,
        /// The merchant asked for.
        #[arg(long)]
        merchant: Option<String>,
        /// Evaluate at this instant instead of the current time (RFC 3339 UTC).
        #[arg(long)]
        now: Option<String>,
        /// Accept only tokens of this environment (`production` refuses sandbox clients'
        /// tokens, as a production resource server must); unset, both are accepted.
        #[arg(long, value_name = "production|sandbox")]
        environment: Option<String>,
    },
}

#[derive(Debug, Args)]
struct Narrow {
    /// Only this account (repeatable), e.g. `acc_1`.
    #[arg(long = "account", value_name = "ACCOUNT")]
    accounts: Vec<String>,
    /// Only this action (repeatable), e.g. `balances:read`.
    #[arg(long = "action", value_name = "ACTION")]
    actions: Vec<String>,
    /// Only this merchant (repeatable), e.g. `m_1`.
    #[arg(long = "merchant", value_name = "MERCHANT")]
    merchants: Vec<String>,
    /// Expire no later than this instant (RFC 3339 UTC).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Only transactions from this instant (RFC 3339 UTC); needs --window-until.
    #[arg(long, value_name = "TIME", requires = "window_until")]
    window_from: Option<String>,
    /// Only transactions up to this instant (RFC 3339 UTC); needs --window-from.
    #[arg(long, value_name = "TIME", requires = "window_from")]
    window_until: Option<String>,
}

impl Narrow {
    fn attenuation(&self) -> Result<Attenuation> {
        let mut a = Attenuation::new();
        if !self.accounts.is_empty() {
            a = a.accounts(
                self.accounts
                    .iter()
                    .map(AccountId::parse)
                    .collect::<Result<Vec<_>, _>>()?,
            );
        }
        if !self.actions.is_empty() {
            a = a.actions(
                self.actions
                    .iter()
                    .map(|s| Action::parse(s))
                    .collect::<Result<Vec<_>, _>>()?,
            );
        }
        if !self.merchants.is_empty() {
            a = a.merchants(
                self.merchants
                    .iter()
                    .map(MerchantId::parse)
                    .collect::<Result<Vec<_>, _>>()?,
            );
        }
        if let Some(t) = &self.until {
            a = a.expires_at(grants::parse_timestamp(t).context("--until")?);
        }
        if let (Some(f), Some(u)) = (&self.window_from, &self.window_until) {
            a = a.window(TxWindow::parse(f, u).context("--window-from/--window-until")?);
        }
        Ok(a)
    }
}

fn read_token(arg: &str) -> Result<String> {
    if arg == "-" {
        let mut s = String::new();
        std::io::stdin()
            .take(1024 * 1024)
            .read_to_string(&mut s)
            .context("reading the token from stdin")?;
        Ok(s.trim().to_owned())
    } else {
        Ok(arg.trim().to_owned())
    }
}

fn load_keys(source: &str) -> Result<KeySet> {
    let json = if source.starts_with("https://") || source.starts_with("http://") {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        let response = agent
            .get(source)
            .call()
            .with_context(|| format!("fetching keys from {source}"))?;
        let mut body = String::new();
        response
            .into_reader()
            .take(1024 * 1024)
            .read_to_string(&mut body)
            .with_context(|| format!("reading keys from {source}"))?;
        body
    } else {
        std::fs::read_to_string(source).with_context(|| format!("reading keys file {source}"))?
    };
    KeySet::from_json(&json).with_context(|| format!("parsing keys from {source}"))
}

fn run(cli: Cli) -> Result<bool> {
    match cli.command {
        Command::Inspect { token, json } => {
            let info = grants::inspect(&read_token(&token)?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
                return Ok(true);
            }
            println!(
                "kid: {}",
                info.kid.map_or("(none)".to_owned(), |k| k.to_string())
            );
            println!("signature: NOT checked (use `grants verify`)");
            for (i, block) in info.blocks.iter().enumerate() {
                let title = if i == 0 {
                    "authority".to_owned()
                } else {
                    format!("block {i}")
                };
                let rid = info.revocation_ids.get(i).map_or("", String::as_str);
                println!("\n== {title} (revocation id {rid})");
                for line in block.lines() {
                    println!("  {line}");
                }
            }
            match (&info.grant, &info.grant_error) {
                (Some(g), _) => {
                    println!("\n== granted scope (authority block)");
                    println!("{}", serde_json::to_string_pretty(g)?);
                }
                (None, Some(e)) => println!("\nnot a grant token: {e}"),
                (None, None) => {}
            }
            Ok(true)
        }
        Command::Attenuate {
            token,
            narrow,
            seal,
        } => {
            let out = grants::attenuate(&read_token(&token)?, &narrow.attenuation()?, seal)?;
            println!("{out}");
            Ok(true)
        }
        Command::Verify {
            token,
            keys,
            operation,
            account,
            from,
            to,
            merchant,
            now,
            environment,
        } => {
            let keys = load_keys(&keys)?;
            let now = match now {
                Some(t) => grants::parse_timestamp(&t).context("--now")?,
                None => chrono::Utc::now(),
            };
            let mut request = Request::new(Action::parse(&operation)?, now);
            if let Some(a) = account {
                request = request.account(AccountId::parse(a)?);
            }
            if let (Some(f), Some(t)) = (from, to) {
                request = request.tx_range(TxWindow::parse(&f, &t)?);
            }
            if let Some(m) = merchant {
                request = request.merchant(MerchantId::parse(m)?);
            }
            // The CLI has no revocation feed; say so rather than imply a full check.
            let mut verifier = Verifier::new(keys, NoRevocationCheck);
            if let Some(e) = environment {
                verifier = verifier.environment(
                    grants::Environment::parse(&e)
                        .ok_or_else(|| anyhow::anyhow!("--environment: production or sandbox"))?,
                );
            }
            match verifier.verify(&read_token(&token)?, &request) {
                Ok(auth) => {
                    println!(
                        "ALLOW (kid {}, {} block(s), {} token; revocation NOT checked)",
                        auth.kid, auth.blocks, auth.environment
                    );
                    println!("{}", serde_json::to_string_pretty(&auth.scope)?);
                    Ok(true)
                }
                Err(e) => {
                    println!("DENY: {e}");
                    Ok(false)
                }
            }
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
