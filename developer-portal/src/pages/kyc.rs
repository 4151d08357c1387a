//! The developer's KYC form and status.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use maud::html;
use platform::session::Session;

use super::markup::{
    csrf_input, error_list, error_page, field, messages, render, see_other, status_of,
};
use super::session::Posted;
use super::{Data, Form, nav};
use crate::error::read;
use crate::kyc::{self, DOCUMENT_KINDS, KycDetails, KycDocument, KycRecord};
use platform::web::auth::{Developer, DeveloperSession};

/// Document rows on the KYC form.
const DOC_ROWS: usize = 3;

fn kyc_page(
    s: &Session,
    record: Option<&KycRecord>,
    reads: &[kyc::StaffRead],
    draft: Option<&Form>,
    errors: &[String],
    status: StatusCode,
) -> HttpResponse {
    let d: Option<&KycDetails> = record.map(|r| &r.details);
    let val = |name: &str, from_record: Option<&str>| -> String {
        match draft {
            Some(f) => field(f, name).to_string(),
            None => from_record.unwrap_or_default().to_string(),
        }
    };
    let editable = record.is_none_or(|r| r.status.editable());
    let doc_val = |i: usize, part: &str| -> String {
        match draft {
            Some(f) => field(f, &format!("doc{i}_{part}")).to_string(),
            None => d
                .and_then(|d| d.documents.get(i))
                .map(|x| match part {
                    "kind" => x.kind.clone(),
                    "filename" => x.filename.clone(),
                    _ => x.sha256.clone(),
                })
                .unwrap_or_default(),
        }
    };
    render(
        status,
        "KYC",
        html! {
            (nav(s))
            h1 { "Know your customer" }
            @match record {
                None => p { "Status: " strong id="kyc-status" { "not started" } },
                Some(r) => {
                    p { "Status: " strong id="kyc-status" { (r.status.as_str()) } " (review round " (r.round) ")" }
                    @if let Some(reason) = &r.decision_reason { p { "Reason from our staff: " em id="kyc-reason" { (reason) } } }
                }
            }
            @if !reads.is_empty() {
                h2 { "Read by bank staff" }
                p.muted { "After its review, bank staff may read your submission only with a colleague's approval, for a stated reason. Each read:" }
                ul id="staff-reads" {
                    @for r in reads { li { (r.at.format("%Y-%m-%d %H:%M UTC")) ": " (r.category.replace('_', " ")) } }
                }
            }
            (error_list(errors))
            @if editable {
                form method="post" action="/developers/kyc" {
                    (csrf_input(&s.csrf_token))
                    p { label { "Legal name " input type="text" name="legal_name" value=(val("legal_name", d.map(|d| d.legal_name.as_str()))) required; } }
                    p { label { "Registration number " input type="text" name="registration_number" value=(val("registration_number", d.map(|d| d.registration_number.as_str()))) required; } }
                    p { label { "Country (ISO 3166 alpha-2) " input type="text" name="country" maxlength="2" value=(val("country", d.map(|d| d.country.as_str()))) required; } }
                    p { label { "Registered address " textarea name="address" rows="3" required { (val("address", d.map(|d| d.address.as_str()))) } } }
                    p { label { "Contact person " input type="text" name="contact_person" value=(val("contact_person", d.map(|d| d.contact_person.as_str()))) required; } }
                    fieldset {
                        legend { "Supporting documents (metadata; send files through the secure channel)" }
                        @for i in 0..DOC_ROWS {
                            p {
                                label {
                                    "Document " (i + 1) ": kind "
                                    select name=(format!("doc{i}_kind")) {
                                        option value="" { "-" }
                                        @for &k in DOCUMENT_KINDS {
                                            option value=(k) selected[doc_val(i, "kind") == k] { (k) }
                                        }
                                    }
                                }
                                label { "File name " input type="text" name=(format!("doc{i}_filename")) value=(doc_val(i, "filename")); }
                                label { "SHA-256 (hex) " input type="text" name=(format!("doc{i}_sha256")) size="66" value=(doc_val(i, "sha256")); }
                            }
                        }
                    }
                    button type="submit" name="action" value="save" { "Save draft" }
                    " "
                    button type="submit" name="action" value="submit" { "Save and submit for review" }
                }
            } @else if let Some(d) = d {
                dl {
                    dt { "Legal name" } dd { (d.legal_name) }
                    dt { "Registration number" } dd { (d.registration_number) }
                    dt { "Country" } dd { (d.country) }
                    dt { "Address" } dd { (d.address) }
                    dt { "Contact person" } dd { (d.contact_person) }
                    dt { "Documents" } dd { ul { @for doc in &d.documents { li { (doc.kind) ": " (doc.filename) } } } }
                }
            }
        },
    )
}

pub(super) async fn kyc_get(p: Data, s: DeveloperSession) -> HttpResponse {
    let cipher = p.master_key.cipher(kyc::PII_KEY);
    let id = s.subject_id.clone();
    let loaded = read(&p, move |c| {
        Ok((
            kyc::for_developer(c, &cipher, &id)?,
            kyc::staff_reads(c, &id)?,
        ))
    });
    match loaded.await {
        Ok((r, reads)) => kyc_page(&s, r.as_ref(), &reads, None, &[], StatusCode::OK),
        Err(e) => error_page(&e, "/developers"),
    }
}

pub(super) async fn kyc_post(post: Posted<Developer>) -> HttpResponse {
    let docs: Vec<KycDocument> = (0..DOC_ROWS)
        .filter(|i| {
            !(post.field(&format!("doc{i}_kind")).is_empty()
                && post.field(&format!("doc{i}_filename")).trim().is_empty()
                && post.field(&format!("doc{i}_sha256")).trim().is_empty())
        })
        .map(|i| KycDocument {
            kind: post.field(&format!("doc{i}_kind")).to_string(),
            filename: post.field(&format!("doc{i}_filename")).to_string(),
            sha256: post.field(&format!("doc{i}_sha256")).to_string(),
        })
        .collect();
    let submit = post.field("action") == "submit";
    let parsed = KycDetails::parse(
        post.field("legal_name"),
        post.field("registration_number"),
        post.field("country"),
        post.field("address"),
        post.field("contact_person"),
        &docs,
    );
    let result = match parsed {
        Ok(details) => {
            let cipher = post.platform.master_key.cipher(kyc::PII_KEY);
            post.write(move |c, id, now| {
                let r = kyc::save(c, &cipher, id, &details, now)?;
                if submit {
                    kyc::submit(c, &cipher, id, now)
                } else {
                    Ok(r)
                }
            })
            .await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => see_other("/developers/kyc"),
        Err(e) => {
            let cipher = post.platform.master_key.cipher(kyc::PII_KEY);
            let (current, reads) = post
                .read(move |c, id, _| {
                    Ok((
                        kyc::for_developer(c, &cipher, id)?,
                        kyc::staff_reads(c, id)?,
                    ))
                })
                .await
                .unwrap_or_default();
            let (s, form) = (&post.session, Some(&post.fields));
            kyc_page(
                s,
                current.as_ref(),
                &reads,
                form,
                &messages(&e),
                status_of(&e),
            )
        }
    }
}
