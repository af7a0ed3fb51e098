//! The access decision of DESIGN §2, as a pure function.
//!
//! [`decide`] takes the mode that applies, who is asking and what the store said about the
//! session's owner, and returns the [`Outcome`]. It does no I/O, so it can be read line by line
//! against the table in DESIGN §2 and property-tested; the [`crate::gatekeeper`] does the lookup
//! and calls it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How strictly ownership is enforced, ordered from weakest to strictest.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mode {
    /// No lookup; everyone is allowed (`enforcement_disabled`).
    #[serde(alias = "disabled")]
    Disabled,
    /// Decide, log and audit "would deny", but allow.
    #[serde(alias = "log_only")]
    LogOnly,
    /// Deny what the rule denies.
    #[serde(alias = "enforced")]
    Enforced,
}

impl Mode {
    /// Whether this mode needs the session's owner from the store.
    pub fn needs_lookup(self) -> bool {
        self != Mode::Disabled
    }

    /// The name used on the wire and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Disabled => "DISABLED",
            Mode::LogOnly => "LOG_ONLY",
            Mode::Enforced => "ENFORCED",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().replace('-', "_").as_str() {
            "DISABLED" => Ok(Mode::Disabled),
            "LOG_ONLY" => Ok(Mode::LogOnly),
            "ENFORCED" => Ok(Mode::Enforced),
            _ => Err(format!(
                "unknown mode {s:?}: use DISABLED, LOG_ONLY or ENFORCED"
            )),
        }
    }
}

/// What the caller is told to do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Allowed by the rule (or enforcement is off).
    Allow,
    /// Denied: the request must not be served.
    Deny,
    /// The rule denies, but the mode is LOG_ONLY: allowed, logged and audited.
    WouldDeny,
}

impl Verdict {
    /// Every verdict, in declaration order (`ALL[v as usize] == v`).
    pub const ALL: [Verdict; 3] = [Verdict::Allow, Verdict::Deny, Verdict::WouldDeny];

    /// Whether the request may go ahead.
    pub fn allowed(self) -> bool {
        self != Verdict::Deny
    }

    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::WouldDeny => "would_deny",
        }
    }

    /// Whether this verdict is audited (everything but a plain allow).
    pub fn is_audited(self) -> bool {
        self != Verdict::Allow
    }
}

/// Why the verdict is what it is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The mode is DISABLED (or the kill switch is on).
    EnforcementDisabled,
    /// The principal is an admin.
    Admin,
    /// The user owns the session.
    Owner,
    /// The session has no owner; it is never auto-assigned (use the claim endpoint).
    NoOwner,
    /// Another user owns the session.
    NotOwner,
    /// The store could not be asked.
    StoreUnavailable,
    /// The enforcement settings are unknown (never read from the store, no local snapshot):
    /// answered as ENFORCED with the store unavailable.
    SettingsUnavailable,
}

impl Reason {
    /// Every reason, in declaration order (`ALL[r as usize] == r`).
    pub const ALL: [Reason; 7] = [
        Reason::EnforcementDisabled,
        Reason::Admin,
        Reason::Owner,
        Reason::NoOwner,
        Reason::NotOwner,
        Reason::StoreUnavailable,
        Reason::SettingsUnavailable,
    ];

    /// The name used on the wire, in logs and in the audit stream.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::EnforcementDisabled => "enforcement_disabled",
            Reason::Admin => "admin",
            Reason::Owner => "owner",
            Reason::NoOwner => "no_owner",
            Reason::NotOwner => "not_owner",
            Reason::StoreUnavailable => "store_unavailable",
            Reason::SettingsUnavailable => "settings_unavailable",
        }
    }

    /// Whether the rule could not be applied because something was unreachable or unknown
    /// (the store, the settings): a denial for this reason is a 503, not a 403.
    pub fn is_unavailable(self) -> bool {
        matches!(self, Reason::StoreUnavailable | Reason::SettingsUnavailable)
    }
}

/// Who the decision is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject<'a> {
    /// The user name checked against the owner.
    pub user: &'a str,
    /// Whether the user is an admin (role `admin` or scope `gatehouse:admin`).
    pub is_admin: bool,
}

/// What the store said about the session's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerLookup<'a> {
    /// No lookup was made (the mode did not need one).
    Skipped,
    /// The store answered: the owner, or `None` for a session with no owner.
    Found(Option<&'a str>),
    /// The store could not be reached in time.
    Unavailable,
}

/// The result of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// allow, deny or would_deny.
    pub verdict: Verdict,
    /// Why.
    pub reason: Reason,
    /// The mode that was applied.
    pub mode: Mode,
}

/// Decides whether `subject` may use a session, given the mode and the owner lookup.
///
/// The rule: admins are allowed, the owner is allowed, an unowned session and another user's
/// session are denied. LOG_ONLY turns a denial into `would_deny`; DISABLED allows without
/// looking. A store that could not be asked fails closed in ENFORCED and open (saying so) in
/// LOG_ONLY. A lookup that was skipped although the mode needs one is treated like an
/// unavailable store, so a caller's mistake can never turn into an allow under ENFORCED.
pub fn decide(mode: Mode, subject: &Subject<'_>, lookup: OwnerLookup<'_>) -> Outcome {
    let outcome = |verdict, reason| Outcome {
        verdict,
        reason,
        mode,
    };
    if mode == Mode::Disabled {
        return outcome(Verdict::Allow, Reason::EnforcementDisabled);
    }
    let rule = if subject.is_admin {
        Ok(Reason::Admin)
    } else {
        match lookup {
            OwnerLookup::Found(Some(owner)) if owner == subject.user => Ok(Reason::Owner),
            OwnerLookup::Found(Some(_)) => Err(Reason::NotOwner),
            OwnerLookup::Found(None) => Err(Reason::NoOwner),
            OwnerLookup::Unavailable | OwnerLookup::Skipped => Err(Reason::StoreUnavailable),
        }
    };
    match (rule, mode) {
        (Ok(reason), _) => outcome(Verdict::Allow, reason),
        (Err(Reason::StoreUnavailable), Mode::LogOnly) => {
            outcome(Verdict::Allow, Reason::StoreUnavailable)
        }
        (Err(reason), Mode::LogOnly) => outcome(Verdict::WouldDeny, reason),
        (Err(reason), _) => outcome(Verdict::Deny, reason),
    }
}

/// Decides for `subject` when the settings are unknown: this instance never read them and has
/// no snapshot, so the mode cannot be resolved.
///
/// Answered as ENFORCED with the store unavailable (DESIGN §2): denied with
/// `settings_unavailable`, except admins, whom every mode allows (so no settings could deny
/// them). No lookup is made: without the settings an owner's answer could not be applied.
pub fn decide_without_settings(subject: &Subject<'_>) -> Outcome {
    let outcome = decide(Mode::Enforced, subject, OwnerLookup::Unavailable);
    match outcome.reason {
        Reason::StoreUnavailable => Outcome {
            reason: Reason::SettingsUnavailable,
            ..outcome
        },
        _ => outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unknown_settings_deny_everyone_but_admins_with_a_503_reason() {
        let o = decide_without_settings(&ALICE);
        assert_eq!(
            (o.verdict, o.reason, o.mode),
            (Verdict::Deny, Reason::SettingsUnavailable, Mode::Enforced)
        );
        assert!(o.reason.is_unavailable());
        let admin = Subject {
            user: "root",
            is_admin: true,
        };
        let o = decide_without_settings(&admin);
        assert_eq!((o.verdict, o.reason), (Verdict::Allow, Reason::Admin));
    }

    const ALICE: Subject<'static> = Subject {
        user: "alice",
        is_admin: false,
    };

    fn verdict(mode: Mode, subject: &Subject<'_>, lookup: OwnerLookup<'_>) -> (Verdict, Reason) {
        let o = decide(mode, subject, lookup);
        assert_eq!(o.mode, mode);
        (o.verdict, o.reason)
    }

    #[test]
    fn the_design_table() {
        use Reason::*;
        use Verdict::*;
        let admin = Subject {
            user: "root",
            is_admin: true,
        };
        let own = OwnerLookup::Found(Some("alice"));
        let other = OwnerLookup::Found(Some("bob"));
        let none = OwnerLookup::Found(None);
        let rows = [
            (
                Mode::Disabled,
                &ALICE,
                OwnerLookup::Skipped,
                Allow,
                EnforcementDisabled,
            ),
            (
                Mode::Disabled,
                &admin,
                OwnerLookup::Skipped,
                Allow,
                EnforcementDisabled,
            ),
            (Mode::LogOnly, &ALICE, own, Allow, Owner),
            (Mode::LogOnly, &ALICE, other, WouldDeny, NotOwner),
            (Mode::LogOnly, &ALICE, none, WouldDeny, NoOwner),
            (Mode::LogOnly, &admin, other, Allow, Admin),
            (
                Mode::LogOnly,
                &ALICE,
                OwnerLookup::Unavailable,
                Allow,
                StoreUnavailable,
            ),
            (Mode::Enforced, &ALICE, own, Allow, Owner),
            (Mode::Enforced, &ALICE, other, Deny, NotOwner),
            (Mode::Enforced, &ALICE, none, Deny, NoOwner),
            (Mode::Enforced, &admin, none, Allow, Admin),
            (
                Mode::Enforced,
                &admin,
                OwnerLookup::Unavailable,
                Allow,
                Admin,
            ),
            (
                Mode::Enforced,
                &ALICE,
                OwnerLookup::Unavailable,
                Deny,
                StoreUnavailable,
            ),
            (
                Mode::Enforced,
                &ALICE,
                OwnerLookup::Skipped,
                Deny,
                StoreUnavailable,
            ),
        ];
        for (mode, subject, lookup, v, r) in rows {
            assert_eq!(
                verdict(mode, subject, lookup),
                (v, r),
                "{mode:?} {subject:?} {lookup:?}"
            );
        }
    }

    #[test]
    fn modes_parse_leniently_and_print_canonically() {
        assert_eq!("log-only".parse::<Mode>(), Ok(Mode::LogOnly));
        assert_eq!("ENFORCED".parse::<Mode>(), Ok(Mode::Enforced));
        assert!("strict".parse::<Mode>().is_err());
        assert_eq!(
            serde_json::to_string(&Mode::LogOnly).unwrap(),
            "\"LOG_ONLY\""
        );
        assert_eq!(
            serde_json::from_str::<Mode>("\"enforced\"").unwrap(),
            Mode::Enforced
        );
    }

    fn any_mode() -> impl Strategy<Value = Mode> {
        prop_oneof![
            Just(Mode::Disabled),
            Just(Mode::LogOnly),
            Just(Mode::Enforced)
        ]
    }

    fn any_lookup() -> impl Strategy<Value = (u8, Option<String>)> {
        (0u8..3, proptest::option::of("[a-c]{1,2}"))
    }

    fn lookup_of(kind: u8, owner: &Option<String>) -> OwnerLookup<'_> {
        match kind {
            0 => OwnerLookup::Skipped,
            1 => OwnerLookup::Found(owner.as_deref()),
            _ => OwnerLookup::Unavailable,
        }
    }

    proptest! {
        #[test]
        fn only_enforced_ever_denies(mode in any_mode(), user in "[a-c]{1,2}", admin: bool, (k, owner) in any_lookup()) {
            let s = Subject { user: &user, is_admin: admin };
            let o = decide(mode, &s, lookup_of(k, &owner));
            prop_assert_eq!(o.verdict == Verdict::Deny, mode == Mode::Enforced && !o.verdict.allowed());
            if mode != Mode::Enforced { prop_assert!(o.verdict.allowed()); }
        }

        #[test]
        fn enforced_allows_exactly_owner_and_admin(user in "[a-c]{1,2}", admin: bool, (k, owner) in any_lookup()) {
            let s = Subject { user: &user, is_admin: admin };
            let o = decide(Mode::Enforced, &s, lookup_of(k, &owner));
            let is_owner = k == 1 && owner.as_deref() == Some(user.as_str());
            prop_assert_eq!(o.verdict.allowed(), admin || is_owner);
        }

        #[test]
        fn log_only_would_deny_exactly_where_enforced_denies(user in "[a-c]{1,2}", admin: bool, (k, owner) in any_lookup()) {
            let s = Subject { user: &user, is_admin: admin };
            let lookup = lookup_of(k, &owner);
            let enforced = decide(Mode::Enforced, &s, lookup);
            let log_only = decide(Mode::LogOnly, &s, lookup);
            let denied_for_a_rule = enforced.verdict == Verdict::Deny && enforced.reason != Reason::StoreUnavailable;
            prop_assert_eq!(log_only.verdict == Verdict::WouldDeny, denied_for_a_rule);
            prop_assert_eq!(log_only.reason, enforced.reason);
        }
    }
}
