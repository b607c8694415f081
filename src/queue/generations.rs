//! The generation table both queues keep: which units a record was accepted under, how
//! many records of each generation are unacknowledged, and which inputs are sealed.

use super::{AppendStop, Barrier, Generation, GenerationId, Seq};
use std::collections::{HashMap, HashSet};

/// One generation and its live figures.
pub(crate) struct GenerationState {
    pub(crate) generation: Generation,
    /// The last sequence number assigned to it.
    pub(crate) last_seq: Seq,
    /// Its records not yet acknowledged.
    pub(crate) unacked: u64,
}

/// Generations by id (ids are positions: the list only grows), plus sealed inputs.
#[derive(Default)]
pub(crate) struct GenerationTable {
    entries: Vec<GenerationState>,
    ids: HashMap<Generation, GenerationId>,
    sealed_inputs: HashSet<String>,
}

impl GenerationTable {
    /// A table holding `generations` in this order (as persisted).
    pub(crate) fn from_list(generations: Vec<Generation>) -> Self {
        let mut table = GenerationTable::default();
        for generation in generations {
            table.register(generation);
        }
        table
    }

    /// The id of `generation`, adding it if new; the flag says whether it was added.
    pub(crate) fn register(&mut self, generation: Generation) -> (GenerationId, bool) {
        if let Some(id) = self.ids.get(&generation) {
            return (*id, false);
        }
        let id = GenerationId(self.entries.len() as u32);
        self.ids.insert(generation.clone(), id);
        self.entries.push(GenerationState {
            generation,
            last_seq: 0,
            unacked: 0,
        });
        (id, true)
    }

    /// Pads the table with placeholders up to `id` (records of a lost table).
    pub(crate) fn ensure(&mut self, id: GenerationId) {
        while self.entries.len() <= id.0 as usize {
            let n = self.entries.len();
            self.register(Generation {
                input_unit: format!("<unknown generation {n}>"),
                output_unit: String::new(),
                output_config_idx: 0,
            });
        }
    }

    pub(crate) fn get(&self, id: GenerationId) -> Option<&GenerationState> {
        self.entries.get(id.0 as usize)
    }

    pub(crate) fn get_mut(&mut self, id: GenerationId) -> Option<&mut GenerationState> {
        self.entries.get_mut(id.0 as usize)
    }

    /// Why a record of `id` may not be appended now, if it may not.
    pub(crate) fn refusal(&self, id: GenerationId) -> Option<AppendStop> {
        match self.get(id) {
            None => Some(AppendStop::Sealed {
                input_unit: format!("<unknown generation {}>", id.0),
            }),
            Some(g) if self.sealed_inputs.contains(&g.generation.input_unit) => {
                Some(AppendStop::Sealed {
                    input_unit: g.generation.input_unit.clone(),
                })
            }
            Some(_) => None,
        }
    }

    fn of_input<'a>(&'a self, input_unit: &'a str) -> impl Iterator<Item = &'a GenerationState> {
        self.entries
            .iter()
            .filter(move |g| g.generation.input_unit == input_unit)
    }

    /// Refuses further records of `input_unit`; its drain barrier.
    pub(crate) fn seal(&mut self, input_unit: &str) -> Barrier {
        self.sealed_inputs.insert(input_unit.to_string());
        let (seq, pending) = self.of_input(input_unit).fold((0, 0), |(seq, pending), g| {
            (seq.max(g.last_seq), pending + g.unacked)
        });
        Barrier { seq, pending }
    }

    /// Accepts records of `input_unit` again.
    pub(crate) fn unseal(&mut self, input_unit: &str) {
        self.sealed_inputs.remove(input_unit);
    }

    /// Unacknowledged records of `input_unit`.
    pub(crate) fn pending(&self, input_unit: &str) -> u64 {
        self.of_input(input_unit).map(|g| g.unacked).sum()
    }

    /// The generations with unacknowledged records, in id order, with their counts.
    pub(crate) fn pending_list(&self) -> Vec<(Generation, u64)> {
        self.entries
            .iter()
            .filter(|g| g.unacked > 0)
            .map(|g| (g.generation.clone(), g.unacked))
            .collect()
    }

    /// The generations in id order (what is persisted).
    pub(crate) fn list(&self) -> Vec<Generation> {
        self.entries.iter().map(|g| g.generation.clone()).collect()
    }
}
