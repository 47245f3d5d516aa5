//! What each part of a process says about itself, for its `/readyz`: a worker that cannot read
//! the turn stream, or a gateway whose Redis is gone, makes the whole process not ready. Every
//! probe of the process (gateway, admin, worker probes) reports all of its parts.

use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The parts of one process and whether each can do its job (cheap to clone; shared).
#[derive(Clone, Debug, Default)]
pub struct Health(Arc<Mutex<BTreeMap<String, Result<(), String>>>>);

impl Health {
    /// Part `part` can do its job.
    pub fn ok(&self, part: &str) {
        self.set(part, Ok(()));
    }

    /// Part `part` cannot do its job, and why.
    pub fn failing(&self, part: &str, why: impl Into<String>) {
        self.set(part, Err(why.into()));
    }

    /// Part `part` has stopped (it no longer counts).
    pub fn remove(&self, part: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(part);
    }

    fn set(&self, part: &str, state: Result<(), String>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(part.to_string(), state);
    }

    /// Whether every part is fine, and each part's state (`"ok"` or why not).
    pub fn report(&self) -> (bool, Value) {
        let parts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let all = parts.values().all(Result::is_ok);
        let map: Map<String, Value> = parts
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    match v {
                        Ok(()) => json!("ok"),
                        Err(why) => json!(why),
                    },
                )
            })
            .collect();
        (all, Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failing_part_makes_the_process_not_ready_until_it_recovers_or_stops() {
        let h = Health::default();
        assert!(h.report().0, "nothing registered: ready");
        h.ok("gateway");
        h.failing("worker w1", "reading the stream failed: NOGROUP");
        let (ready, parts) = h.report();
        assert!(!ready);
        assert_eq!(parts["worker w1"], "reading the stream failed: NOGROUP");
        assert_eq!(parts["gateway"], "ok");
        h.ok("worker w1");
        assert!(h.report().0);
        h.failing("worker w2", "x");
        h.remove("worker w2");
        assert!(h.report().0);
    }
}
