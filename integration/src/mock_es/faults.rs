//! Fault injection for mock-es: the knobs ([`Faults`]) and the seeded dice that apply them.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// Faults to inject into `_bulk` requests. All rates are fractions in `0.0..=1.0`; the
/// default injects nothing.
///
/// Whole-request faults are tried in this order: reset, latency, 413, 400, 429, 503. Item faults
/// only hit items that would otherwise have been indexed, and the document is not indexed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Fraction of `_bulk` requests answered 429 as a whole (`es_rejected_execution_exception`).
    pub request_429_rate: f64,
    /// Fraction of items answered 429 individually.
    pub item_429_rate: f64,
    /// Fraction of `_bulk` requests answered 503 as a whole.
    pub request_5xx_rate: f64,
    /// Fraction of items answered 500 or 503 individually.
    pub item_5xx_rate: f64,
    /// Delay added before answering each `_bulk` request.
    pub latency_ms: u64,
    /// Delay added after a `_bulk` request's items are indexed, before the answer: a
    /// client whose timeout is shorter sends them again and should see 409s.
    pub latency_after_index_ms: u64,
    /// Items whose document has this top-level field get 400 `mapper_parsing_exception`.
    pub reject_field: Option<String>,
    /// Fraction of `_bulk` requests whose connection is closed without a response.
    pub reset_rate: f64,
    /// Bodies larger than this (after decompression) are answered 413 as a whole.
    pub max_request_bytes: Option<usize>,
    /// Items into this data stream are answered 429 `cluster_block_exception`, every time,
    /// as Elasticsearch does for an index under the flood-stage disk watermark block.
    pub blocked_index: Option<String>,
    /// Fraction of `_bulk` requests answered 400 as a whole, whatever they hold (as a proxy
    /// or a header Elasticsearch refuses does): no single item is at fault.
    pub request_400_rate: f64,
}

impl Faults {
    /// True when some item fault has a non-zero rate (the dice are needed per item).
    pub(crate) fn has_item_faults(&self) -> bool {
        self.item_429_rate > 0.0 || self.item_5xx_rate > 0.0
    }
}

/// A 400/429/503 answer to a whole `_bulk` request (the reset fault is rolled separately, first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestFault {
    /// Answer 400 for the whole request.
    BadRequest,
    /// Answer 429 `es_rejected_execution_exception`.
    TooManyRequests,
    /// Answer 503.
    Unavailable,
}

/// An injected per-item failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ItemFault {
    /// Item status 429.
    TooManyRequests,
    /// Item status 500.
    Internal,
    /// Item status 503.
    Unavailable,
}

/// The seeded dice. One lock per request, never held across an await.
pub(crate) struct Dice {
    rng: Mutex<StdRng>,
}

impl Dice {
    /// Dice seeded with `seed`: the same seed and the same request sequence give the same faults.
    pub(crate) fn new(seed: u64) -> Self {
        Dice {
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StdRng> {
        self.rng
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether to reset this request's connection (decided before anything else).
    pub(crate) fn reset(&self, faults: &Faults) -> bool {
        faults.reset_rate > 0.0 && hit(&mut self.lock(), faults.reset_rate)
    }

    /// The 400/429/503 whole-request fault for this request, if any.
    pub(crate) fn request_fault(&self, faults: &Faults) -> Option<RequestFault> {
        if faults.request_400_rate <= 0.0
            && faults.request_429_rate <= 0.0
            && faults.request_5xx_rate <= 0.0
        {
            return None;
        }
        let mut rng = self.lock();
        if hit(&mut rng, faults.request_400_rate) {
            Some(RequestFault::BadRequest)
        } else if hit(&mut rng, faults.request_429_rate) {
            Some(RequestFault::TooManyRequests)
        } else if hit(&mut rng, faults.request_5xx_rate) {
            Some(RequestFault::Unavailable)
        } else {
            None
        }
    }

    /// One roll per item, in item order (`None` for items spared).
    pub(crate) fn item_faults(&self, faults: &Faults, items: usize) -> Vec<Option<ItemFault>> {
        if !faults.has_item_faults() {
            return vec![None; items];
        }
        let mut rng = self.lock();
        (0..items)
            .map(|_| {
                if hit(&mut rng, faults.item_429_rate) {
                    Some(ItemFault::TooManyRequests)
                } else if hit(&mut rng, faults.item_5xx_rate) {
                    if rng.gen_bool(0.5) {
                        Some(ItemFault::Internal)
                    } else {
                        Some(ItemFault::Unavailable)
                    }
                } else {
                    None
                }
            })
            .collect()
    }
}

fn hit(rng: &mut StdRng, rate: f64) -> bool {
    if rate >= 1.0 {
        true
    } else if rate > 0.0 {
        rng.gen_bool(rate)
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_faults() {
        let faults = Faults {
            item_429_rate: 0.3,
            item_5xx_rate: 0.3,
            ..Faults::default()
        };
        let a = Dice::new(7).item_faults(&faults, 100);
        let b = Dice::new(7).item_faults(&faults, 100);
        assert_eq!(a, b);
        assert!(a.iter().any(Option::is_some));
        assert!(a.iter().any(Option::is_none));
    }

    #[test]
    fn rates_of_one_and_zero_are_exact() {
        let dice = Dice::new(1);
        let always = Faults {
            request_429_rate: 1.0,
            reset_rate: 1.0,
            ..Faults::default()
        };
        assert!(dice.reset(&always));
        assert_eq!(
            dice.request_fault(&always),
            Some(RequestFault::TooManyRequests)
        );
        assert!(!dice.reset(&Faults::default()));
        assert_eq!(dice.request_fault(&Faults::default()), None);
    }

    #[test]
    fn faults_deserialize_with_defaults() {
        let faults: Faults = serde_json::from_str(r#"{"latency_ms":5}"#).expect("parses");
        assert_eq!(faults.latency_ms, 5);
        assert_eq!(faults.reject_field, None);
    }
}
