//! What the dashboard pages show (maud markup), from the service's view models.

use super::*;

fn day(t: DateTime<Utc>) -> String {
    dashboard::format_day(t)
}

fn day_time(t: DateTime<Utc>) -> String {
    t.format("%-d %b %Y, %H:%M UTC").to_string()
}

fn window_text(g: &GrantView) -> String {
    let short = |s: &str| s.get(..10).unwrap_or(s).to_string();
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

const NOTICE_STYLE: &str = "border:2px solid #bf8700;background:#fff8c5;border-radius:6px;\
    padding:.5rem .9rem;margin:.6rem 0";
const FLASH_STYLE: &str = "border:2px solid #1a7f37;background:#dafbe1;border-radius:6px;\
    padding:.5rem .9rem;margin:.6rem 0";

/// The warning that an app is about to lose its access, with the button that extends it.
/// `back` is the page the form returns to.
fn notice_markup(g: &GrantView, n: &GrantNotice, csrf: &str, back: &str) -> Markup {
    html! {
        div.notice role="alert" data-kind=(n.kind) style=(NOTICE_STYLE) {
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
            p.flash role="status" style=(FLASH_STYLE) {
                "Done: " (g.client_name) " stays connected until " (day(g.expires_at)) "."
            }
        }
    }
}

fn grant_card(g: &GrantView, csrf: &str, detail_link: bool) -> Markup {
    // The list page links to the detail page; forms return to the page they are on.
    let back = if detail_link {
        "/account/apps".to_string()
    } else {
        format!("/account/apps/{}", g.grant_id)
    };
    html! {
        section.app data-grant-id=(g.grant_id) data-status=(g.status) {
            h3.app-name { (g.client_name) }
            @if let Some(n) = &g.notice {
                (notice_markup(g, n, csrf, &back))
            }
            (crate::dashboard::operator_markup(&g.environment, g.verified_legal_name.as_deref()))
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
    csrf: &str,
    extended: Option<&GrantView>,
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
            (flash_markup(extended))
            @if !ending.is_empty() {
                section.attention role="alert" style=(NOTICE_STYLE) {
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
                    @for g in &active { (grant_card(g, csrf, true)) }
                }
            }
            section id="past" {
                h2 { "Past apps" }
                @if past.is_empty() {
                    p.empty { "None." }
                } @else {
                    @for g in &past { (grant_card(g, csrf, true)) }
                }
            }
        },
    )
}

pub(super) fn detail_markup(
    g: &GrantView,
    events: &[ActivityEvent],
    csrf: &str,
    extended: bool,
) -> Markup {
    page(
        &format!("{} - connected app", g.client_name),
        html! {
            p { a href="/account/apps" { "All connected apps" } }
            h1 { (g.client_name) }
            (flash_markup(extended.then_some(g)))
            (grant_card(g, csrf, false))
            h2 { "What this app did" }
            @if events.is_empty() {
                p.empty { "Nothing yet." }
            } @else {
                table.history {
                    thead { tr { th { "When" } th { "What happened" } } }
                    tbody {
                        @for e in events {
                            tr data-action=(e.action) {
                                td { (day_time(e.occurred_at)) }
                                td { (e.description) }
                            }
                        }
                    }
                }
            }
            (logout_form(csrf))
        },
    )
}
