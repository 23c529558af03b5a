//! weir-llm
