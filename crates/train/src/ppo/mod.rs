//! RLHF with PPO (InstructGPT step 3).

pub mod advantage;
pub mod control;
pub mod loss;
