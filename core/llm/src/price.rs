//! Prices per model and the cost of a call.

use crate::Usage;

/// The price of one model, in US dollars per million tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    /// A model name, or a prefix ending in `*` (`claude-sonnet-4*`).
    pub model: String,
    /// Only for this provider (by name); any provider when `None`.
    pub provider: Option<String>,
    pub input: f64,
    pub output: f64,
    /// Cached prompt tokens; the input price when `None`.
    pub cached_input: Option<f64>,
}

impl Price {
    fn matches(&self, provider: &str, model: &str) -> Option<usize> {
        if self.provider.as_deref().is_some_and(|p| p != provider) {
            return None;
        }
        let specificity = usize::from(self.provider.is_some());
        match self.model.strip_suffix('*') {
            Some(prefix) if model.starts_with(prefix) => Some(2 * prefix.len() + specificity),
            // An exact name beats every prefix.
            None if self.model == model => Some(usize::MAX - 1 + specificity),
            _ => None,
        }
    }

    /// The cost of `usage` in US dollars.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_prompt_tokens.min(usage.prompt_tokens);
        let uncached = usage.prompt_tokens - cached;
        let per_token = 1e-6;
        (uncached as f64 * self.input
            + cached as f64 * self.cached_input.unwrap_or(self.input)
            + usage.completion_tokens as f64 * self.output)
            * per_token
    }
}

/// The price table: configured prices first, then the built-in ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceTable {
    prices: Vec<Price>,
}

/// List prices (USD per million tokens: input, output, cached input) as the providers published
/// them in 2025; configuration overrides them (`prices:`).
const BUILTIN: &[(&str, f64, f64, f64)] = &[
    ("gpt-4o-mini*", 0.15, 0.60, 0.075),
    ("gpt-4o*", 2.50, 10.00, 1.25),
    ("gpt-4.1-nano*", 0.10, 0.40, 0.025),
    ("gpt-4.1-mini*", 0.40, 1.60, 0.10),
    ("gpt-4.1*", 2.00, 8.00, 0.50),
    ("o4-mini*", 1.10, 4.40, 0.275),
    ("claude-3-5-haiku*", 0.80, 4.00, 0.08),
    ("claude-3-7-sonnet*", 3.00, 15.00, 0.30),
    ("claude-sonnet-4*", 3.00, 15.00, 0.30),
    ("claude-opus-4*", 15.00, 75.00, 1.50),
    ("gemini-2.0-flash*", 0.10, 0.40, 0.025),
    ("gemini-2.5-flash*", 0.30, 2.50, 0.075),
    ("gemini-2.5-pro*", 1.25, 10.00, 0.31),
    ("mistral-large*", 2.00, 6.00, 2.00),
    ("mistral-small*", 0.10, 0.30, 0.10),
];

impl PriceTable {
    /// The built-in prices and `configured` ones, which win over them.
    pub fn new(configured: Vec<Price>) -> Self {
        let mut prices = configured;
        prices.extend(BUILTIN.iter().map(|&(model, input, output, cached)| Price {
            model: model.to_owned(),
            provider: None,
            input,
            output,
            cached_input: Some(cached),
        }));
        Self { prices }
    }

    /// The price for a model of a provider: the most specific match (exact name over prefix,
    /// longer prefix over shorter, provider-specific over general, configured over built-in).
    pub fn find(&self, provider: &str, model: &str) -> Option<&Price> {
        let mut best: Option<(usize, &Price)> = None;
        for p in &self.prices {
            if let Some(score) = p.matches(provider, model)
                && best.is_none_or(|(s, _)| score > s)
            {
                best = Some((score, p));
            }
        }
        best.map(|(_, p)| p)
    }

    /// The cost of a call, when its model has a price.
    pub fn cost(&self, provider: &str, model: &str, usage: &Usage) -> Option<f64> {
        self.find(provider, model).map(|p| p.cost(usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(prompt: u64, completion: u64, cached: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            cached_prompt_tokens: cached,
        }
    }

    #[test]
    fn most_specific_price_wins() {
        let table = PriceTable::new(vec![
            Price {
                model: "gpt-4o".into(),
                provider: None,
                input: 1.0,
                output: 2.0,
                cached_input: None,
            },
            Price {
                model: "gpt-4o".into(),
                provider: Some("azure".into()),
                input: 3.0,
                output: 4.0,
                cached_input: None,
            },
        ]);
        assert_eq!(table.find("openai", "gpt-4o").map(|p| p.input), Some(1.0));
        assert_eq!(table.find("azure", "gpt-4o").map(|p| p.input), Some(3.0));
        // Prefixes: the longer one.
        assert_eq!(
            table
                .find("openai", "gpt-4o-mini-2024-07-18")
                .map(|p| p.input),
            Some(0.15)
        );
        assert_eq!(
            table.find("openai", "gpt-4o-2024-08-06").map(|p| p.input),
            Some(2.5)
        );
        assert!(table.find("openai", "unknown-model").is_none());
    }

    #[test]
    fn cost_counts_cached_tokens_at_their_price() {
        let p = Price {
            model: "m".into(),
            provider: None,
            input: 2.0,
            output: 8.0,
            cached_input: Some(0.5),
        };
        let c = p.cost(&usage(1_000_000, 500_000, 400_000));
        assert!(
            (c - (0.6 * 2.0 + 0.4 * 0.5 + 0.5 * 8.0)).abs() < 1e-9,
            "{c}"
        );
        assert_eq!(p.cost(&usage(0, 0, 0)), 0.0);
    }
}
