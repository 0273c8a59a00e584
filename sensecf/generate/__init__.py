"""The CF generation engine: per-line grammars from the spec, a lenient parser for free text,
token enforcers (lm-format-enforcer, xgrammar) and the hf / openai backends."""
