//! Closed sets of string values, documented as OpenAPI enums. A field that Rust holds as a
//! `String` (a column value, a label) names its set with
//! `#[schema(value_type = platform::values::Environment)]` (or `Option<...>`), so generated
//! clients get an enum instead of prose.

/// Declares value sets: `Name = ["a", "b"];`, each a schema component named `Name`.
#[macro_export]
macro_rules! value_sets {
    ($($(#[doc = $doc:literal])* $name:ident = [$($value:literal),+ $(,)?];)*) => {$(
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name;

        impl $name {
            /// The values, in the documented order.
            pub const VALUES: &'static [&'static str] = &[$($value),+];
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some(
                        [$($doc),*].iter().map(|l| l.trim()).collect::<Vec<_>>().join(" "),
                    ))
                    .enum_values(Some(Self::VALUES.iter().copied()))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    )*};
}

value_sets! {
    /// Where a client runs: `sandbox` (test data, anyone) or `production` (real accounts, approved
    /// KYC only).
    Environment = ["sandbox", "production"];
    /// Who or what ended a grant (`revocation::RevokedBy`).
    RevokedBy = ["customer", "client", "staff", "dormancy", "expiry", "security"];
    /// Who did something, in an audit event.
    ActorType = ["customer", "client", "staff", "system"];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::RevokedBy as Ended;

    #[test]
    fn the_documented_sets_are_the_ones_the_code_writes() {
        let ended = [
            Ended::Customer,
            Ended::Client,
            Ended::Staff,
            Ended::Dormancy,
            Ended::Expiry,
            Ended::Security,
        ];
        let written: Vec<&str> = ended.iter().map(|e| e.as_str()).collect();
        assert_eq!(written, RevokedBy::VALUES);
    }
}
