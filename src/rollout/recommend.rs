//! The rollout ladder as a pure function: the phase the settings are at, and what to do
//! next (DISABLED → LOG_ONLY ≥ 24 h → ENFORCED for 10 % → 50 % → everyone, ≥ 1 h per step).

use std::time::Duration;

use super::{
    Action, MIN_OBSERVATION, MIN_STEP, PERCENT_STEPS, Phase, Recommendation, Step, WindowCounts,
};
use crate::decision::Mode;
use crate::enforcement::EnforcementSettings;

/// The phase the settings are at.
pub fn phase(settings: &EnforcementSettings) -> Phase {
    if settings.kill_switch {
        return Phase::Killed;
    }
    match (settings.mode, settings.enforce_percent) {
        (Mode::Disabled, _) => Phase::Disabled,
        (Mode::LogOnly, _) => Phase::Observing,
        (Mode::Enforced, Some(p)) if p < 100 => Phase::Partial,
        (Mode::Enforced, _) => Phase::Enforced,
    }
}

/// What to do next, given the settings, the ownership coverage, how long the current phase
/// has lasted (`None`: unknown, treated as just started) and the audited decisions of the
/// window, when known.
pub fn recommend(
    settings: &EnforcementSettings,
    owned_sessions: u64,
    in_phase: Option<Duration>,
    counts: Option<&WindowCounts>,
) -> Recommendation {
    let lasted = in_phase.unwrap_or_default();
    let mut reasons = Vec::new();
    let relaxed: Vec<&str> = settings
        .endpoints
        .iter()
        .filter(|(_, mode)| **mode < settings.mode)
        .map(|(name, _)| name.as_str())
        .collect();
    if !relaxed.is_empty() && settings.mode != Mode::Disabled {
        reasons.push(format!(
            "endpoints {} are overridden to a weaker mode than the global one",
            relaxed.join(", ")
        ));
    }
    let phase = phase(settings);
    if phase == Phase::Killed {
        reasons.insert(
            0,
            "the kill switch is on: every check is allowed without looking; find out why it \
             was turned on (GET /v1/enforcement/history) and turn it off before advancing"
                .into(),
        );
        return hold(reasons);
    }
    if owned_sessions == 0 && phase != Phase::Disabled {
        reasons.insert(
            0,
            "no session has an owner yet: run the backfill before going further".into(),
        );
        return hold(reasons);
    }
    match phase {
        Phase::Killed => hold(reasons),
        Phase::Disabled => from_disabled(owned_sessions, reasons),
        Phase::Observing => from_observing(lasted, counts, reasons),
        Phase::Partial => from_partial(settings, lasted, counts, reasons),
        Phase::Enforced => {
            reasons.insert(0, "ENFORCED for everyone: the rollout is complete".into());
            hold(reasons)
        }
    }
}

fn hold(reasons: Vec<String>) -> Recommendation {
    Recommendation {
        action: Action::Hold,
        next: None,
        reasons,
    }
}

fn advance(mode: Mode, enforce_percent: Option<u8>, reasons: Vec<String>) -> Recommendation {
    Recommendation {
        action: Action::Advance,
        next: Some(Step {
            mode,
            enforce_percent,
        }),
        reasons,
    }
}

/// DISABLED → LOG_ONLY, once sessions have owners.
fn from_disabled(owned_sessions: u64, mut reasons: Vec<String>) -> Recommendation {
    if owned_sessions == 0 {
        reasons.push(
            "no session has an owner yet: LOG_ONLY would report every legacy \
             session as unowned; run the backfill first"
                .into(),
        );
        return hold(reasons);
    }
    reasons.push(
        "LOG_ONLY decides every check and records would-deny events without \
         refusing anyone: the data needed before enforcing"
            .into(),
    );
    advance(Mode::LogOnly, None, reasons)
}

/// LOG_ONLY → ENFORCED for a first share of users, after enough observation.
fn from_observing(
    lasted: Duration,
    counts: Option<&WindowCounts>,
    mut reasons: Vec<String>,
) -> Recommendation {
    if lasted < MIN_OBSERVATION {
        reasons.push(format!(
            "LOG_ONLY for {}; collect at least {} of would-deny data first",
            hours(lasted),
            hours(MIN_OBSERVATION)
        ));
        return hold(reasons);
    }
    if let Some(counts) = counts {
        if counts.would_deny == 0 {
            reasons.push(format!(
                "no would-deny decision in the last {}: either all access is \
                 legitimate, or traffic does not go through gatehouse; check before \
                 enforcing",
                counts.window
            ));
        } else {
            reasons.push(format!(
                "{} would-deny decisions in the last {}: review them \
                 (GET /v1/audit?decision=would_deny, GET /v1/audit/summary)",
                counts.would_deny, counts.window
            ));
        }
    }
    reasons.push(format!(
        "LOG_ONLY for {}: if the would-deny events are all expected (attempts on other \
         users' sessions), enforce for a first share of users",
        hours(lasted)
    ));
    advance(Mode::Enforced, Some(PERCENT_STEPS[0]), reasons)
}

/// ENFORCED for a share → the next share (or everyone), one step per `MIN_STEP`, held while
/// checks fail closed on an unreachable store.
fn from_partial(
    settings: &EnforcementSettings,
    lasted: Duration,
    counts: Option<&WindowCounts>,
    mut reasons: Vec<String>,
) -> Recommendation {
    let percent = settings.enforce_percent.unwrap_or(100);
    if lasted < MIN_STEP {
        reasons.push(format!(
            "ENFORCED for {percent}% of users for {}; wait at least {} per step",
            hours(lasted),
            hours(MIN_STEP)
        ));
        return hold(reasons);
    }
    let next = PERCENT_STEPS
        .into_iter()
        .find(|step| *step > percent)
        .filter(|step| *step < 100);
    if let Some(counts) = counts.filter(|c| c.store_unavailable > 0) {
        reasons.insert(
            0,
            format!(
                "{} checks failed closed on an unreachable store in the last {}: \
                 fix the store's availability before widening",
                counts.store_unavailable, counts.window
            ),
        );
        return hold(reasons);
    }
    reasons.push(format!(
        "ENFORCED for {percent}% of users for {} with no kill switch: widen it",
        hours(lasted)
    ));
    advance(Mode::Enforced, next, reasons)
}

fn hours(d: Duration) -> String {
    format!("{:.1} h", d.as_secs_f64() / 3600.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timestamp::Timestamp;

    fn settings(mode: Mode, percent: Option<u8>) -> EnforcementSettings {
        EnforcementSettings {
            enforce_percent: percent,
            ..EnforcementSettings::initial(mode)
        }
    }

    const DAY: Duration = MIN_OBSERVATION;

    #[test]
    fn the_ladder_is_disabled_log_only_partial_full() {
        let r = recommend(&settings(Mode::Disabled, None), 10, None, None);
        assert_eq!(r.action, Action::Advance);
        assert_eq!(r.next.unwrap().mode, Mode::LogOnly);

        let r = recommend(&settings(Mode::LogOnly, None), 10, Some(DAY), None);
        assert_eq!(
            r.next,
            Some(Step {
                mode: Mode::Enforced,
                enforce_percent: Some(10)
            })
        );

        let r = recommend(
            &settings(Mode::Enforced, Some(10)),
            10,
            Some(MIN_STEP),
            None,
        );
        assert_eq!(r.next.unwrap().enforce_percent, Some(50));
        let r = recommend(
            &settings(Mode::Enforced, Some(50)),
            10,
            Some(MIN_STEP),
            None,
        );
        assert_eq!(r.next.unwrap().enforce_percent, None, "then everyone");

        let r = recommend(&settings(Mode::Enforced, None), 10, Some(DAY), None);
        assert_eq!(r.action, Action::Hold);
        assert!(r.reasons[0].contains("complete"));
    }

    #[test]
    fn holds_until_enough_time_has_passed() {
        let r = recommend(
            &settings(Mode::LogOnly, None),
            10,
            Some(Duration::from_secs(3600)),
            None,
        );
        assert_eq!(r.action, Action::Hold);
        assert!(r.reasons[0].contains("1.0 h"), "{:?}", r.reasons);
        let r = recommend(&settings(Mode::LogOnly, None), 10, None, None);
        assert_eq!(
            r.action,
            Action::Hold,
            "unknown duration counts as just set"
        );
        let r = recommend(
            &settings(Mode::Enforced, Some(10)),
            10,
            Some(Duration::from_secs(60)),
            None,
        );
        assert_eq!(r.action, Action::Hold);
    }

    #[test]
    fn kill_switch_and_no_owners_hold() {
        let mut killed = settings(Mode::Enforced, Some(10));
        killed.kill_switch = true;
        let r = recommend(&killed, 10, Some(DAY), None);
        assert_eq!((r.action, phase(&killed)), (Action::Hold, Phase::Killed));
        assert!(r.reasons[0].contains("kill switch"));

        for mode in [Mode::Disabled, Mode::LogOnly, Mode::Enforced] {
            let r = recommend(&settings(mode, None), 0, Some(DAY), None);
            assert_eq!(r.action, Action::Hold, "{mode:?}");
            assert!(r.reasons.iter().any(|r| r.contains("backfill")), "{mode:?}");
        }
    }

    #[test]
    fn weaker_endpoint_overrides_are_pointed_out() {
        let mut s = settings(Mode::LogOnly, None);
        s.endpoints.insert("chat.export".into(), Mode::Disabled);
        s.endpoints.insert("chat.read".into(), Mode::Enforced);
        let r = recommend(&s, 10, Some(DAY), None);
        assert!(
            r.reasons
                .iter()
                .any(|r| r.contains("chat.export") && !r.contains("chat.read")),
            "{:?}",
            r.reasons
        );
    }

    #[test]
    fn audited_counts_shape_the_reasons() {
        let counts = |would_deny, store_unavailable| WindowCounts {
            window: "24h".into(),
            since: Timestamp::from_unix_millis(0),
            would_deny,
            deny: store_unavailable,
            store_unavailable,
            complete: true,
        };
        let r = recommend(
            &settings(Mode::LogOnly, None),
            10,
            Some(DAY),
            Some(&counts(0, 0)),
        );
        assert!(r.reasons[0].contains("no would-deny"), "{:?}", r.reasons);
        let r = recommend(
            &settings(Mode::LogOnly, None),
            10,
            Some(DAY),
            Some(&counts(42, 0)),
        );
        assert!(r.reasons[0].contains("42 would-deny"), "{:?}", r.reasons);
        let r = recommend(
            &settings(Mode::Enforced, Some(10)),
            10,
            Some(MIN_STEP),
            Some(&counts(0, 3)),
        );
        assert_eq!(r.action, Action::Hold);
        assert!(
            r.reasons[0].contains("3 checks failed closed"),
            "{:?}",
            r.reasons
        );
    }
}
