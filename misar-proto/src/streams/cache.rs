//! [`CacheOrder`]: which campaigns keep a late-joiner event, least recently updated first.

use std::collections::{BTreeMap, HashMap};

use crate::route::CampaignId;

/// The bound of the late-joiner cache (§2.7): at most `capacity` campaigns keep their latest
/// `progress` or terminal event; the least recently updated is forgotten first.
///
/// The streams keep the events; this only orders the campaigns. [`touch`](Self::touch) a
/// campaign whenever its stream cached an event ([`Fanout::cached`](super::Fanout::cached))
/// and call [`Stream::forget_cached`](super::Stream::forget_cached) on the campaigns it
/// returns. A campaign forgotten this way also forgets that it finished: a later joiner gets
/// nothing first, and a later publish is accepted. Size the capacity above the number of
/// campaigns that run at once.
#[derive(Debug)]
pub struct CacheOrder {
    capacity: usize,
    tick: u64,
    by_tick: BTreeMap<u64, CampaignId>,
    ticks: HashMap<CampaignId, u64>,
}

impl CacheOrder {
    /// An empty order keeping at most `capacity` campaigns (0: the cache is off, every touched
    /// campaign is returned at once).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            tick: 0,
            by_tick: BTreeMap::new(),
            ticks: HashMap::new(),
        }
    }

    /// Campaigns kept now.
    pub fn len(&self) -> usize {
        self.ticks.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.ticks.is_empty()
    }

    /// Records `campaign` as the most recently updated; returns the campaigns to forget (at
    /// most one, unless the capacity is 0).
    #[must_use = "the returned campaigns must be forgotten by their streams"]
    pub fn touch(&mut self, campaign: &CampaignId) -> Vec<CampaignId> {
        if self.capacity == 0 {
            return vec![campaign.clone()];
        }
        self.tick = self.tick.wrapping_add(1);
        let tick = self.tick;
        match self.ticks.get_mut(campaign) {
            Some(old) => {
                self.by_tick.remove(old);
                *old = tick;
            }
            None => {
                self.ticks.insert(campaign.clone(), tick);
            }
        }
        self.by_tick.insert(tick, campaign.clone());
        let mut evicted = Vec::new();
        while self.ticks.len() > self.capacity {
            let Some((_, oldest)) = self.by_tick.pop_first() else {
                break;
            };
            self.ticks.remove(&oldest);
            evicted.push(oldest);
        }
        evicted
    }
}
