//! A Kafka topic with transactions in the simulated world, written as the
//! exactly-once Kafka sink writes one: a producer's first call fences every
//! earlier producer of the topic and aborts the transaction it left open;
//! each checkpoint's records go in one transaction that also commits the
//! sink's position; a publish reads that position first and writes only
//! what comes after. What a `read_committed` reader sees is kept in the
//! world's sinks, under the topic's name, so the checker reads it as it
//! reads a file. The transaction is written in pieces with the world's
//! latency between them, so a kill or a pause lands inside one: the abort
//! paths that the test broker cannot show.

use std::io;
use std::sync::Arc;

use bytes::Bytes;

use super::executor::sequence_problem;
use super::world::World;
use crate::connectors::Sink;

/// A topic's transactional state.
#[derive(Debug, Default, Clone, Hash)]
pub struct Topic {
    /// The sink's position: the offset committed with the last transaction.
    pub position: u64,
    /// The newest producer's epoch; an older producer is fenced.
    pub epoch: u64,
    /// The open transaction: its producer's epoch and its records so far.
    pub open: Option<(u64, Vec<u8>)>,
    /// Transactions aborted by a new producer.
    pub aborted: u64,
}

/// One attempt's producer of a topic.
pub struct SimKafkaSink {
    pub world: Arc<World>,
    pub node: usize,
    pub topic: String,
    /// This producer's epoch, once it has fenced the ones before.
    pub epoch: Option<u64>,
    /// The transaction under way, on a task of its own: as the real
    /// sink's blocking call, it goes on when its caller stops waiting.
    pub in_flight: Option<tokio::task::JoinHandle<io::Result<()>>>,
}

/// One transaction of one producer.
struct Transaction {
    world: Arc<World>,
    node: usize,
    topic: String,
    epoch: u64,
}

impl SimKafkaSink {
    /// `init_transactions` on first use: fences every earlier producer
    /// and aborts the transaction one left open.
    async fn producer(&mut self) -> u64 {
        if let Some(epoch) = self.epoch {
            return epoch;
        }
        self.world.latency(self.node).await;
        let mut state = self.world.lock();
        let topic = state.topics.entry(self.topic.clone()).or_default();
        topic.epoch += 1;
        let epoch = topic.epoch;
        let aborted = topic.open.take().map(|(e, records)| (e, records.len()));
        if aborted.is_some() {
            topic.aborted += 1;
        }
        let (node, name) = (self.node, &self.topic);
        state.note(|| format!("node {node}: topic {name} producer epoch {epoch}, aborted {aborted:?}"));
        self.epoch = Some(epoch);
        epoch
    }

    /// Writes `output` (staged at `at`) in a transaction on a task of its
    /// own, and waits for it.
    async fn write(&mut self, at: u64, output: Bytes) -> io::Result<()> {
        if output.is_empty() {
            return Ok(());
        }
        self.settle().await;
        let transaction = Transaction {
            world: self.world.clone(),
            node: self.node,
            topic: self.topic.clone(),
            epoch: self.producer().await,
        };
        let task = self
            .in_flight
            .insert(tokio::spawn(async move { transaction.write(at, &output).await }));
        let result = task.await.unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
        self.in_flight = None;
        result
    }
}

impl Transaction {
    fn fenced(&self) -> io::Error {
        io::Error::other(format!(
            "topic {}: producer epoch {} is fenced by a newer one",
            self.topic, self.epoch
        ))
    }

    /// Runs `step` on this producer's open transaction, after the world's
    /// latency; fenced if a newer producer aborted it.
    async fn in_transaction(&self, step: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        self.world.latency(self.node).await;
        let mut state = self.world.lock();
        let topic = state.topics.entry(self.topic.clone()).or_default();
        match &mut topic.open {
            Some((e, records)) if *e == self.epoch => {
                step(records);
                Ok(())
            }
            _ => Err(self.fenced()),
        }
    }

    async fn write(&self, at: u64, output: &[u8]) -> io::Result<()> {
        let epoch = self.epoch;
        self.world.latency(self.node).await;
        let end = at + output.len() as u64;
        let position = {
            let mut state = self.world.lock();
            let topic = state.topics.entry(self.topic.clone()).or_default();
            if topic.epoch != epoch {
                return Err(self.fenced());
            }
            let position = topic.position;
            if position < end {
                topic.open = Some((epoch, Vec::new()));
            }
            position
        };
        if position >= end {
            return Ok(());
        }
        let skip = position.checked_sub(at).map(|s| s as usize);
        let Some(skip) = skip.filter(|s| *s == 0 || output[s - 1] == b'\n') else {
            let what = format!(
                "node {}: topic {} at position {position}, which is not a record of the output staged at {at}",
                self.node, self.topic
            );
            self.world.violation(what.clone());
            return Err(io::Error::other(what));
        };
        // Two pieces, split at a record: a fault may land between them.
        let rest = &output[skip..];
        let half = rest[..rest.len() / 2]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        for piece in [&rest[..half], &rest[half..]] {
            self.in_transaction(|records| records.extend_from_slice(piece)).await?;
        }
        // The commit, with the sink's position in it, after a round trip
        // to the transaction coordinator: long enough for faults to land
        // in an open transaction.
        let round_trip = self.world.lock().rng.u64(5..50);
        tokio::time::sleep(std::time::Duration::from_millis(round_trip)).await;
        self.world.latency(self.node).await;
        let mut state = self.world.lock();
        let topic = state.topics.entry(self.topic.clone()).or_default();
        let records = match topic.open.take() {
            Some((e, records)) if e == epoch => records,
            other => {
                topic.open = other;
                return Err(self.fenced());
            }
        };
        topic.position = end;
        let (node, name) = (self.node, self.topic.clone());
        state.note(|| format!("node {node}: topic {name} commits at {end}"));
        let seen = state.sinks.entry(name.clone()).or_default();
        seen.extend_from_slice(&records);
        if let Some(problem) = sequence_problem(&name, seen) {
            state
                .violations
                .push(format!("node {node}: topic {name} as read_committed: {problem}"));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Sink for SimKafkaSink {
    async fn initial_position(&mut self) -> io::Result<u64> {
        self.producer().await;
        self.world.latency(self.node).await;
        Ok(self.world.lock().topics.get(&self.topic).map_or(0, |t| t.position))
    }

    async fn publish(&mut self, position: u64, output: Bytes) -> io::Result<()> {
        self.write(position, output).await
    }

    /// Fences first even with nothing to write: a transaction a dead
    /// leader left open must not outlive its failover (FLINK-23854).
    async fn recover(&mut self, position: u64, output: Bytes) -> io::Result<()> {
        self.producer().await;
        self.write(position, output).await
    }

    async fn settle(&mut self) {
        if let Some(task) = self.in_flight.as_mut() {
            let _ = task.await;
            self.in_flight = None;
        }
    }
}
