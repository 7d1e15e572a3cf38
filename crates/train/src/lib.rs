//! chatforge-train: the optimizer and schedules, batching, the training-event stream, and one
//! module per stage.

pub mod artifact;
pub mod batch;
pub mod best_of_n;
mod error;
pub mod eval;
pub mod events;
pub mod guard;
pub mod metrics;
pub mod optim;
pub mod ppo;
pub mod prepare;
pub mod pretrain;
pub mod rank;
pub mod report;
pub mod reward;
pub mod sft;
pub mod stats;
pub mod tasks_eval;

pub use error::{Error, Result};
pub use events::{StepMetrics, TrainEvent};
