//! weir's end-to-end suite: one test binary (so the heavy build happens
//! once), a module per feature, shared helpers in `harness`. Every test runs a
//! real ZooKeeper and real `weir` processes, and fails loudly without them.

mod harness;
mod kafka_broker;
mod netns;
mod postgres_server;
mod s3;
mod zookeeper;

mod access;
mod bench;
mod bench_connectors;
mod bench_scale;
mod chaos;
mod cli;
mod dashboard;
mod deploy;
mod ensemble;
mod failover;
mod faults;
mod kafka;
mod memory_images;
mod nexmark_queries;
mod partition;
mod pipeline;
mod postgres;
mod rescale;
mod savepoint;
mod scale;
mod storage;
mod wordcount;
