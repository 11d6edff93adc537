//! Which contribution the program carries: the primary, the backup, or the
//! slate when both are lost. Pure logic, fed by the program pipeline once
//! per output picture with each feed's health (see [`health`]); the switch
//! itself happens in [`super::program`] on the same picture.
//!
//! Automatic rules:
//! - on the primary: lost for `detect_after` → the backup if healthy, else
//!   the slate;
//! - on the backup: the primary back and healthy for `return_after` → the
//!   primary; the backup lost → the primary if healthy, else the slate;
//! - on the slate: the first healthy feed, the primary first. At start the
//!   backup is taken only once the primary has had `detect_after` to
//!   deliver, so a primary that is merely slower to start is not skipped.
//!
//! By hand, `PRIMARY` or `BACKUP` holds whatever their health until `AUTO`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::FailoverSettings;

/// A source the program can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Feed {
    /// The primary contribution.
    Primary,
    /// The backup contribution.
    Backup,
    /// The slate (no source to carry).
    Slate,
}

impl Feed {
    /// The displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            Feed::Primary => "PRIMARY",
            Feed::Backup => "BACKUP",
            Feed::Slate => "SLATE",
        }
    }
}

/// Which source the programme carries, as master control chose it: the
/// automatic failover, or a source held by hand. The one name for that
/// choice from the API to the pipelines; [`Feed`] is what is on air.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SourceChoice {
    /// Automatic failover: the primary, the backup while the primary is
    /// lost, the slate when both are (the rules above).
    #[default]
    Auto,
    /// The primary, whatever its health.
    Primary,
    /// The backup, whatever its health.
    Backup,
    /// The slate. The programme's cue puts it on air (it is the cue's
    /// slate, as before T0); meanwhile the failover goes on following the
    /// feeds' health, so a return to `Auto` finds the right one ready.
    Slate,
}

impl SourceChoice {
    /// The displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceChoice::Auto => "AUTO",
            SourceChoice::Primary => "PRIMARY",
            SourceChoice::Backup => "BACKUP",
            SourceChoice::Slate => "SLATE",
        }
    }
}

/// One switch between feeds, for the status and the as-run log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SourceSwitch {
    /// UTC (ns) of the first picture of the new feed, by its timestamp.
    pub at_utc_ns: u64,
    /// The feed before.
    pub from: Feed,
    /// The feed after.
    pub to: Feed,
    /// Why, in words.
    pub reason: String,
    /// Master control's slate (put on or released), not the failover.
    pub by_hand: bool,
}

/// A feed whose pictures stop this long starts a new run when they return
/// (less than the least failover detection time).
pub(crate) const RUN_GAP: Duration = Duration::from_millis(100);

/// What the feed has delivered, updated from its streaming threads.
#[derive(Debug, Default)]
pub struct SourceCounters {
    /// Valid MPEG-TS bytes (raw bytes for the test source).
    pub bytes: AtomicU64,
    /// Bytes refused as not MPEG-TS.
    pub garbage_bytes: AtomicU64,
    /// Pictures received: access units as they come (passthrough, and a
    /// transcoding feed's before its decoder), the test source's raw
    /// pictures.
    pub frames: AtomicU64,
    /// Pictures decoded (transcode mode): a feed whose data comes but
    /// decodes nothing is rebuilt.
    pub decoded: AtomicU64,
    /// Clock time (ns) of the last picture; 0 if none yet.
    pub last_frame_ns: AtomicU64,
    /// Clock time (ns) of the last valid TS; 0 if none yet.
    pub last_valid_ns: AtomicU64,
    /// Clock time (ns) of the last garbage; 0 if none yet.
    pub last_garbage_ns: AtomicU64,
    /// Clock time (ns) of the timestamp of the first picture since the
    /// feed last started delivering (after a gap of `RUN_GAP`, 100 ms, or more).
    pub run_start_pts_ns: AtomicU64,
}

impl SourceCounters {
    /// When the latest run of pictures can first be shown.
    pub fn shows_from(&self) -> u64 {
        self.run_start_pts_ns.load(Ordering::Relaxed)
    }

    /// The instants the failover's health is judged on.
    pub fn seen(&self) -> Seen {
        Seen {
            last_frame_ns: self.last_frame_ns.load(Ordering::Relaxed),
            last_valid_ns: self.last_valid_ns.load(Ordering::Relaxed),
            last_garbage_ns: self.last_garbage_ns.load(Ordering::Relaxed),
        }
    }
}

/// What a feed's counters say, at one instant (clock ns; 0: never).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// The last picture received.
    pub last_frame_ns: u64,
    /// The last valid MPEG-TS.
    pub last_valid_ns: u64,
    /// The last data refused as not MPEG-TS.
    pub last_garbage_ns: u64,
}

/// One look at a feed, for [`Selector::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Look {
    /// See [`health`].
    pub health: Result<(), String>,
    /// Clock time (ns) of the timestamp of the feed's first picture since
    /// it last started delivering: the program can show it from then on
    /// (a feed's pictures are stamped ahead of their arrival by its own
    /// buffering).
    pub shows_from_ns: u64,
}

/// A feed is healthy when a picture came within `detect_after` (counted as
/// it arrives, before any decoding) and no garbage arrived within it:
/// garbage mixed into a feed counts as loss even if some pictures still
/// come.
pub fn health(now_ns: u64, seen: Seen, detect_after: Duration) -> Result<(), String> {
    let d = detect_after.as_nanos() as u64;
    let recent = |t: u64| t > 0 && now_ns.saturating_sub(t) < d;
    let ms = detect_after.as_millis();
    if recent(seen.last_garbage_ns) {
        Err(format!("carries data that is not MPEG-TS (within the last {ms} ms)"))
    } else if recent(seen.last_frame_ns) {
        Ok(())
    } else if recent(seen.last_valid_ns) {
        Err(format!("carries MPEG-TS but no picture decoded for {ms} ms"))
    } else if seen.last_frame_ns == 0 && seen.last_valid_ns == 0 {
        Err("no picture yet".into())
    } else {
        Err(format!("no data for {ms} ms"))
    }
}

/// The automatic failover's state.
#[derive(Debug)]
pub struct Selector {
    settings: FailoverSettings,
    has_backup: bool,
    choice: SourceChoice,
    on: Feed,
    started_ns: Option<u64>,
    /// Since when each feed (primary, backup) has been healthy (clock ns).
    healthy_since: [Option<u64>; 2],
}

impl Selector {
    /// Starts on the slate, waiting for a feed.
    pub fn new(settings: FailoverSettings, has_backup: bool) -> Self {
        Self {
            settings,
            has_backup,
            choice: SourceChoice::Auto,
            on: Feed::Slate,
            started_ns: None,
            healthy_since: [None; 2],
        }
    }

    /// The feed carried now.
    pub fn on(&self) -> Feed {
        self.on
    }

    /// The choice in force.
    pub fn choice(&self) -> SourceChoice {
        self.choice
    }

    /// Sets the choice; takes effect at the next [`Selector::decide`].
    pub fn set_choice(&mut self, choice: SourceChoice) {
        self.choice = choice;
    }

    /// Looks at both feeds at clock time `now_ns`, for the output picture
    /// of clock time `picture_ns` (a little earlier: the mixers wait for
    /// late input); returns the new feed and why, when it changes. A feed
    /// goes on only once it was healthy at the picture's time, so the
    /// picture that switches carries it.
    pub fn decide(
        &mut self,
        now_ns: u64,
        picture_ns: u64,
        primary: Look,
        backup: Option<Look>,
    ) -> Option<(Feed, String)> {
        let started = *self.started_ns.get_or_insert(now_ns);
        let none = || Look { health: Err("not running".into()), shows_from_ns: 0 };
        let backup = if self.has_backup { backup.unwrap_or_else(none) } else { none() };
        for (i, look) in [&primary, &backup].into_iter().enumerate() {
            // Healthy from when its pictures can be shown, not before.
            let from = now_ns.max(look.shows_from_ns);
            self.healthy_since[i] =
                if look.health.is_ok() { Some(self.healthy_since[i].unwrap_or(from)) } else { None };
        }
        let (primary, backup) = (primary.health, backup.health);
        let primary_healthy = primary.is_ok();
        let p_for = self.healthy_since[0].map(|s| Duration::from_nanos(now_ns.saturating_sub(s)));
        // On only once it could be shown at the picture's time, so the
        // picture that switches carries it.
        let usable = |i: usize| self.healthy_since[i].is_some_and(|s| s <= picture_ns);
        let (p_ok, b_ok) = (usable(0), usable(1));
        let why_p = primary.err().unwrap_or_default();
        let why_b = backup.err().unwrap_or_default();
        let lost_both = || {
            if self.has_backup {
                format!("primary lost ({why_p}) and backup lost ({why_b})")
            } else {
                format!("primary lost ({why_p}), no backup configured")
            }
        };
        let (to, reason) = match (self.choice, self.on) {
            (SourceChoice::Primary, on) if on != Feed::Primary => (Feed::Primary, "held by hand: PRIMARY".to_owned()),
            (SourceChoice::Backup, on) if on != Feed::Backup => (Feed::Backup, "held by hand: BACKUP".to_owned()),
            (SourceChoice::Primary | SourceChoice::Backup, _) => return None,
            // Auto, and Slate (the cue's slate is on air; the feeds are
            // followed as in Auto):
            (_, Feed::Primary) if p_ok => return None,
            (_, Feed::Primary) if b_ok => (Feed::Backup, format!("primary lost: {why_p}")),
            (_, Feed::Primary) => (Feed::Slate, lost_both()),
            (_, Feed::Backup) if p_for.is_some_and(|d| d >= self.settings.return_after) => {
                (Feed::Primary, format!("primary healthy again for {:.1} s", self.settings.return_after.as_secs_f64()))
            }
            (_, Feed::Backup) if b_ok => return None,
            (_, Feed::Backup) if p_ok => (Feed::Primary, format!("backup lost ({why_b}); primary healthy")),
            (_, Feed::Backup) => (Feed::Slate, lost_both()),
            (_, Feed::Slate) if p_ok => (Feed::Primary, "primary delivering".to_owned()),
            // A healthy primary whose pictures are not due yet is waited
            // for: it goes on within its buffering, not the backup.
            (_, Feed::Slate)
                if b_ok
                    && !primary_healthy
                    && Duration::from_nanos(now_ns.saturating_sub(started)) >= self.settings.detect_after =>
            {
                (Feed::Backup, format!("backup delivering; primary lost ({why_p})"))
            }
            (_, Feed::Slate) => return None,
        };
        self.on = to;
        Some((to, reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn settings() -> FailoverSettings {
        FailoverSettings { detect_after: Duration::from_millis(500), return_after: Duration::from_secs(5) }
    }

    fn ok() -> Look {
        Look { health: Ok(()), shows_from_ns: 0 }
    }

    fn lost() -> Look {
        Look { health: Err("no data for 500 ms".into()), shows_from_ns: 0 }
    }

    #[test]
    fn health_names_the_kind_of_loss() {
        let d = Duration::from_millis(500);
        let now = 10_000 * MS;
        let fresh = Seen { last_frame_ns: now - 40 * MS, last_valid_ns: now - 10 * MS, last_garbage_ns: 0 };
        assert_eq!(health(now, fresh, d), Ok(()));
        assert_eq!(health(now, Seen::default(), d), Err("no picture yet".into()));
        let stale = Seen { last_frame_ns: now - 500 * MS, last_valid_ns: now - 600 * MS, last_garbage_ns: 0 };
        assert_eq!(health(now, stale, d), Err("no data for 500 ms".into()));
        let no_video = Seen { last_frame_ns: now - 900 * MS, last_valid_ns: now - 5 * MS, last_garbage_ns: 0 };
        assert!(health(now, no_video, d).unwrap_err().contains("no picture decoded"));
        // Garbage mixed in: lost even though pictures still decode.
        let mixed = Seen { last_garbage_ns: now - 100 * MS, ..fresh };
        assert!(health(now, mixed, d).unwrap_err().contains("not MPEG-TS"));
        let old_garbage = Seen { last_garbage_ns: now - 501 * MS, ..fresh };
        assert_eq!(health(now, old_garbage, d), Ok(()));
    }

    #[test]
    fn starts_on_the_primary_and_fails_over_to_the_backup_then_the_slate() {
        let mut s = Selector::new(settings(), true);
        assert_eq!(s.decide(0, 0, lost(), Some(lost())), None);
        assert_eq!(s.decide(100 * MS, 100 * MS, ok(), Some(ok())).map(|c| c.0), Some(Feed::Primary));
        assert_eq!(s.decide(200 * MS, 200 * MS, ok(), Some(ok())), None);
        let (to, why) = s.decide(900 * MS, 900 * MS, lost(), Some(ok())).unwrap();
        assert_eq!((to, why.as_str()), (Feed::Backup, "primary lost: no data for 500 ms"));
        let (to, why) = s.decide(2000 * MS, 2000 * MS, lost(), Some(lost())).unwrap();
        assert_eq!(to, Feed::Slate);
        assert!(why.contains("primary lost") && why.contains("backup lost"), "{why}");
        assert_eq!(s.decide(2040 * MS, 2040 * MS, lost(), Some(lost())), None);
    }

    #[test]
    fn the_primary_returns_only_after_the_stability_window() {
        let mut s = Selector::new(settings(), true);
        s.decide(0, 0, ok(), Some(ok()));
        assert_eq!(s.decide(1000 * MS, 1000 * MS, lost(), Some(ok())).map(|c| c.0), Some(Feed::Backup));
        // Back at 2 s; a blip at 4 s restarts the window.
        assert_eq!(s.decide(2000 * MS, 2000 * MS, ok(), Some(ok())), None);
        assert_eq!(s.decide(4000 * MS, 4000 * MS, lost(), Some(ok())), None);
        assert_eq!(s.decide(4040 * MS, 4040 * MS, ok(), Some(ok())), None);
        assert_eq!(s.decide(9000 * MS, 9000 * MS, ok(), Some(ok())), None);
        let (to, why) = s.decide(9040 * MS, 9040 * MS, ok(), Some(ok())).unwrap();
        assert_eq!(to, Feed::Primary);
        assert!(why.contains("5.0 s"), "{why}");
    }

    #[test]
    fn a_lost_backup_hands_back_to_a_healthy_primary_at_once() {
        let mut s = Selector::new(settings(), true);
        s.decide(0, 0, ok(), Some(ok()));
        s.decide(1000 * MS, 1000 * MS, lost(), Some(ok()));
        assert_eq!(s.decide(1500 * MS, 1500 * MS, ok(), Some(ok())), None);
        assert_eq!(s.decide(1600 * MS, 1600 * MS, ok(), Some(lost())).map(|c| c.0), Some(Feed::Primary));
    }

    #[test]
    fn from_the_slate_the_first_healthy_feed_goes_on() {
        let mut s = Selector::new(settings(), true);
        s.decide(0, 0, ok(), Some(ok()));
        s.decide(1000 * MS, 1000 * MS, lost(), Some(lost()));
        assert_eq!(s.on(), Feed::Slate);
        assert_eq!(s.decide(3000 * MS, 3000 * MS, lost(), Some(ok())).map(|c| c.0), Some(Feed::Backup));
        let mut s = Selector::new(settings(), true);
        s.decide(0, 0, ok(), Some(ok()));
        s.decide(1000 * MS, 1000 * MS, lost(), Some(lost()));
        assert_eq!(s.decide(3000 * MS, 3000 * MS, ok(), Some(lost())).map(|c| c.0), Some(Feed::Primary));
    }

    #[test]
    fn at_start_the_primary_gets_the_detection_time_before_the_backup() {
        let mut s = Selector::new(settings(), true);
        assert_eq!(s.decide(0, 0, lost(), Some(ok())), None);
        assert_eq!(s.decide(400 * MS, 400 * MS, lost(), Some(ok())), None);
        assert_eq!(s.decide(500 * MS, 500 * MS, lost(), Some(ok())).map(|c| c.0), Some(Feed::Backup));
    }

    #[test]
    fn at_start_a_healthy_primary_buffered_longer_than_the_backup_still_goes_on_first() {
        let mut s = Selector::new(settings(), true);
        let later = Look { health: Ok(()), shows_from_ns: 1500 * MS };
        assert_eq!(s.decide(0, 0, lost(), Some(ok())), None);
        assert_eq!(s.decide(600 * MS, 600 * MS, later.clone(), Some(ok())), None, "the primary is due soon");
        assert_eq!(s.decide(1400 * MS, 1400 * MS, later.clone(), Some(ok())), None);
        assert_eq!(s.decide(1500 * MS, 1500 * MS, later, Some(ok())).map(|c| c.0), Some(Feed::Primary));
    }

    #[test]
    fn a_feed_goes_on_only_once_it_was_healthy_at_the_pictures_time() {
        let mut s = Selector::new(settings(), true);
        // First pictures seen at 1000 ms while the mixer outputs 900 ms.
        assert_eq!(s.decide(1000 * MS, 900 * MS, ok(), Some(lost())), None);
        assert_eq!(s.decide(1040 * MS, 940 * MS, ok(), Some(lost())), None);
        assert_eq!(s.decide(1100 * MS, 1000 * MS, ok(), Some(lost())).map(|c| c.0), Some(Feed::Primary));
    }

    #[test]
    fn a_feed_stamped_ahead_goes_on_when_its_first_picture_is_due() {
        let mut s = Selector::new(settings(), false);
        let ahead = Look { health: Ok(()), shows_from_ns: 1700 * MS };
        assert_eq!(s.decide(1000 * MS, 900 * MS, ahead.clone(), None), None);
        assert_eq!(s.decide(1800 * MS, 1660 * MS, ahead.clone(), None), None);
        assert_eq!(s.decide(1840 * MS, 1700 * MS, ahead, None).map(|c| c.0), Some(Feed::Primary));
    }

    #[test]
    fn without_a_backup_a_lost_primary_means_slate() {
        let mut s = Selector::new(settings(), false);
        s.decide(0, 0, ok(), None);
        let (to, why) = s.decide(1000 * MS, 1000 * MS, lost(), None).unwrap();
        assert_eq!(to, Feed::Slate);
        assert!(why.contains("no backup configured"), "{why}");
        assert_eq!(s.decide(1040 * MS, 1040 * MS, ok(), None).map(|c| c.0), Some(Feed::Primary));
    }

    #[test]
    fn a_feed_held_by_hand_stays_until_auto() {
        let mut s = Selector::new(settings(), true);
        s.decide(0, 0, ok(), Some(ok()));
        s.set_choice(SourceChoice::Backup);
        assert_eq!(s.decide(40 * MS, 40 * MS, ok(), Some(ok())), Some((Feed::Backup, "held by hand: BACKUP".into())));
        assert_eq!(s.decide(80 * MS, 80 * MS, ok(), Some(lost())), None, "held even when lost");
        s.set_choice(SourceChoice::Primary);
        assert_eq!(s.decide(120 * MS, 120 * MS, lost(), Some(ok())).map(|c| c.0), Some(Feed::Primary));
        assert_eq!(s.decide(900 * MS, 900 * MS, lost(), Some(ok())), None);
        s.set_choice(SourceChoice::Auto);
        assert_eq!(s.decide(940 * MS, 940 * MS, lost(), Some(ok())).map(|c| c.0), Some(Feed::Backup));
    }

    #[test]
    fn under_the_slate_by_hand_the_feeds_are_followed_as_in_auto() {
        let mut s = Selector::new(settings(), true);
        s.decide(0, 0, ok(), Some(ok()));
        s.set_choice(SourceChoice::Slate);
        assert_eq!(s.decide(1000 * MS, 1000 * MS, lost(), Some(ok())).map(|c| c.0), Some(Feed::Backup));
        s.set_choice(SourceChoice::Auto);
        assert_eq!(s.decide(1040 * MS, 1040 * MS, lost(), Some(ok())), None, "the backup was ready");
    }
}
