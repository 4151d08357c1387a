//! What the dashboard pages show (maud markup), from the service's view models.

use super::*;
use std::collections::HashMap;

use crate::dashboard::{ActivityPage, LastRead};

fn day(t: DateTime<Utc>) -> String {
    dashboard::format_day(t)
}

fn day_time(t: DateTime<Utc>) -> String {
    t.format("%-d %b %Y, %H:%M UTC").to_string()
}

/// The first ten characters of a stored instant (`2026-02-01T00:00:00Z`) as a day.
fn stored_day(s: &str) -> Option<chrono::NaiveDate> {
    chrono::NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok()
}

fn window_text(g: &GrantView) -> String {
    let short = |s: &str| stored_day(s).map_or_else(|| s.to_string(), dashboard::summary_day);
    match (&g.transactions_from, &g.transactions_until) {
        (Some(f), Some(u)) => format!("From {} to {}", short(f), short(u)),
        (Some(f), None) => format!("From {}", short(f)),
        (None, Some(u)) => format!("Until {}", short(u)),
        (None, None) => "Your whole transaction history".into(),
    }
}

fn status_text(g: &GrantView) -> &'static str {
    match (g.status.as_str(), g.revoked_by.as_deref()) {
        ("authorized", _) => "Active",
        ("awaiting_authorization", _) => "Waiting for the app",
        ("rejected", _) => "Refused by you",
        ("expired", _) => "Expired",
        ("revoked", Some("customer")) => "Ended by you",
        ("revoked", Some("client")) => "Ended by the app",
        ("revoked", Some("staff")) => "Ended by the bank",
        ("revoked", Some("dormancy")) => "Ended (not used for a long time)",
        ("revoked", Some("security")) => "Ended by the bank for your protection",
        ("revoked", _) => "Ended",
        _ => "Unknown",
    }
}

/// The card's one-sentence summary, worded as on the consent page.
fn summary_text(g: &GrantView) -> String {
    let day_of = |s: &Option<String>| s.as_deref().and_then(stored_day);
    let window = match (day_of(&g.transactions_from), day_of(&g.transactions_until)) {
        (Some(f), Some(u)) => Some((f, u)),
        _ => None,
    };
    dashboard::AccessSummary {
        app: &g.client_name,
        verb: if g.active { "can see" } else { "could see" },
        actions: g.actions.iter().map(|a| a.action.as_str()).collect(),
        accounts: g.accounts.len(),
        window,
        merchants: g
            .merchants
            .as_ref()
            .map(|m| m.iter().map(|m| m.name.as_str()).collect()),
        until: g.expires_at.date_naive(),
    }
    .sentence()
}

/// What the list page confirms after a change.
pub(super) struct Flash<'a> {
    pub extended: Option<&'a GrantView>,
    pub revoked: Option<Revoked<'a>>,
}

pub(super) enum Revoked<'a> {
    One(&'a GrantView),
    All,
}

/// The warning that an app is about to lose its access, with the button that extends it.
/// `back` is the page the form returns to.
fn notice_markup(g: &GrantView, n: &GrantNotice, csrf: &str, back: &str) -> Markup {
    html! {
        div.notice role="alert" data-kind=(n.kind) {
            p { strong { (n.message) } }
            form.extend method="post" action={ "/account/apps/" (g.grant_id) "/extend" } {
                input type="hidden" name="csrf_token" value=(csrf);
                input type="hidden" name="next" value=(back);
                button type="submit" { "Extend access for " (g.client_name) }
            }
        }
    }
}

/// The confirmation shown after an extension (`?extended=<grant id>` on the page).
fn flash_markup(g: Option<&GrantView>) -> Markup {
    html! {
        @if let Some(g) = g {
            p.flash role="status" {
                "Done: " (g.client_name) " stays connected until " (day(g.expires_at)) "."
            }
        }
    }
}

/// The confirmation shown after a revocation (`?revoked=<grant id>` or `?revoked=all`).
fn revoked_markup(r: Option<&Revoked>) -> Markup {
    html! {
        @match r {
            Some(Revoked::One(g)) => {
                p.flash role="status" data-revoked=(g.grant_id) {
                    "Done: " (g.client_name) " can no longer see your data. Its access ended now, everywhere."
                }
            }
            Some(Revoked::All) => {
                p.flash role="status" data-revoked="all" {
                    "Done: no app can see your data any more. Their access ended now, everywhere."
                }
            }
            None => {}
        }
    }
}

fn grant_card(g: &GrantView, read: Option<&LastRead>, csrf: &str, detail_link: bool) -> Markup {
    // The list page links to the detail page; forms return to the page they are on.
    let back = if detail_link {
        "/account/apps".to_string()
    } else {
        format!("/account/apps/{}", g.grant_id)
    };
    html! {
        section.app data-grant-id=(g.grant_id) data-status=(g.status) {
            // Under the list's h2 sections, or under the detail page's h1.
            @if detail_link { h3.app-name { (g.client_name) } } @else { h2.app-name { "Access" } }
            @if let Some(n) = &g.notice {
                (notice_markup(g, n, csrf, &back))
            }
            (crate::dashboard::operator_markup(&g.environment, g.verified_legal_name.as_deref()))
            p.summary { (summary_text(g)) }
            dl {
                dt { "Status" } dd.status { (status_text(g)) }
                dt { "Accounts" }
                dd {
                    @if g.accounts.is_empty() { "None" }
                    ul.accounts {
                        @for a in &g.accounts {
                            li { (a.name) " " span.muted { (a.masked_number) " " (a.currency) } }
                        }
                    }
                }
                dt { "The app may" }
                dd { ul.actions { @for a in &g.actions { li { (a.description) } } } }
                @if g.actions.iter().any(|a| a.action == "transactions:read") {
                    dt { "Transactions" } dd.window { (window_text(g)) }
                    dt { "Merchants" }
                    dd.merchants {
                        @match &g.merchants {
                            None => { "All merchants" },
                            Some(m) => { (m.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")) }
                        }
                    }
                }
                dt { "Connected on" } dd { (day(g.authorized_at.unwrap_or(g.created_at))) }
                @if g.active {
                    dt { "Access ends on" } dd.expires { (day(g.expires_at)) }
                    @if let Some(t) = g.dormancy_deadline {
                        dt { "Disconnected if unused until" } dd.dormancy { (day(t)) }
                    }
                } @else if let Some(t) = g.revoked_at {
                    dt { "Ended on" } dd { (day(t)) }
                } @else {
                    dt { "Access ended on" } dd { (day(g.expires_at)) }
                }
                dt { "Last used" }
                dd { @match g.last_used_at { Some(t) => { (day_time(t)) }, None => { "Never" } } }
                dt { "Last read" }
                dd.last-read {
                    @match read {
                        Some(r) => { (r.description) ", " (day_time(r.at)) }
                        None => { "Nothing read yet" }
                    }
                }
            }
            @if g.active {
                form.revoke method="post" action={ "/account/apps/" (g.grant_id) "/revoke" } {
                    input type="hidden" name="csrf_token" value=(csrf);
                    button type="submit" { "Revoke access for " (g.client_name) }
                }
            }
            @if detail_link {
                p { a href={ "/account/apps/" (g.grant_id) } { "What this app did" } }
            }
        }
    }
}

fn logout_form(csrf: &str) -> Markup {
    html! {
        form.logout method="post" action="/logout" {
            input type="hidden" name="csrf_token" value=(csrf);
            button type="submit" { "Log out" }
        }
    }
}

pub(super) fn apps_markup(
    name: &str,
    grants: &[GrantView],
    reads: &HashMap<String, LastRead>,
    csrf: &str,
    flash: &Flash,
) -> Markup {
    let (active, past): (Vec<&GrantView>, Vec<&GrantView>) = grants.iter().partition(|g| g.active);
    let ending: Vec<&GrantView> = active
        .iter()
        .copied()
        .filter(|g| g.notice.is_some())
        .collect();
    page(
        "Your connected apps",
        html! {
            h1 { "Your connected apps" }
            p.muted { "Logged in as " (name) "." }
            (logout_form(csrf))
            (flash_markup(flash.extended))
            (revoked_markup(flash.revoked.as_ref()))
            @if !ending.is_empty() {
                section.attention role="alert" {
                    h2 { "Needs your attention" }
                    @for g in &ending {
                        @if let Some(n) = &g.notice {
                            p data-grant-id=(g.grant_id) {
                                strong { (g.client_name) ": " } (n.message)
                            }
                            form.extend method="post" action={ "/account/apps/" (g.grant_id) "/extend" } {
                                input type="hidden" name="csrf_token" value=(csrf);
                                input type="hidden" name="next" value="/account/apps";
                                button type="submit" { "Extend access for " (g.client_name) }
                            }
                        }
                    }
                }
            }
            p { "These apps can see some of your bank data because you allowed them to. You can end any app's access at once; it stops working immediately." }
            section id="active" {
                h2 { "Connected now" }
                @if active.is_empty() {
                    p.empty { "No apps are connected to your accounts." }
                } @else {
                    form.revoke-all method="post" action="/account/apps/revoke-all" {
                        input type="hidden" name="csrf_token" value=(csrf);
                        button type="submit" { "Revoke access for all apps" }
                    }
                    @for g in &active { (grant_card(g, reads.get(&g.grant_id), csrf, true)) }
                }
            }
            section id="past" {
                h2 { "Past apps" }
                @if past.is_empty() {
                    p.empty { "None." }
                } @else {
                    @for g in &past { (grant_card(g, reads.get(&g.grant_id), csrf, true)) }
                }
            }
        },
    )
}

pub(super) fn detail_markup(
    g: &GrantView,
    read: Option<&LastRead>,
    history: &ActivityPage,
    paged: bool,
    csrf: &str,
    extended: bool,
) -> Markup {
    let here = format!("/account/apps/{}", g.grant_id);
    page(
        &format!("{} - connected app", g.client_name),
        html! {
            p { a href="/account/apps" { "All connected apps" } }
            h1 { (g.client_name) }
            (flash_markup(extended.then_some(g)))
            (grant_card(g, read, csrf, false))
            h2 #history { "What this app did" }
            @if history.events.is_empty() {
                p.empty { "Nothing yet." }
            } @else {
                div.table-wrap {
                    table.history {
                        caption.muted { "Newest first" @if paged { ", older events" } }
                        thead { tr { th scope="col" { "When" } th scope="col" { "What happened" } } }
                        tbody {
                            @for e in &history.events {
                                tr data-action=(e.action) {
                                    td { (day_time(e.occurred_at)) }
                                    td { (e.description) }
                                }
                            }
                        }
                    }
                }
            }
            @if paged || history.older.is_some() {
                nav.pager aria-label="History pages" {
                    @if paged { a href={ (here) "#history" } { "Newest events" } } @else { span {} }
                    @if let Some(older) = history.older {
                        a rel="next" href={ (here) "?before=" (older) "#history" } { "Older events" }
                    }
                }
            }
            (logout_form(csrf))
        },
    )
}
