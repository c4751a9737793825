/**
 * The config.toml `initHome` writes when there is none: every setting commented out at its
 * default, so the file documents itself and parses to exactly the defaults (tested).
 */
export const STARTER_CONFIG = `# Astrid configuration. Every key: docs/config.md.
# API keys are never written here: export them (ANTHROPIC_API_KEY=...) and
# name the variable with api_key_env in a [providers.<name>] table.
# A workspace's .astrid/config.toml may only make these settings stricter.

[defaults]
# mode = "guided"            # safe | guided | autonomous | yolo
# orchestrator = "react"     # the capsule that serves prompts (the agent loop)
# provider = "anthropic"     # a key of [providers]; built in: anthropic, ollama, replay
# model = "claude-sonnet-4-5"

[budget]
# session_usd = "5.00"       # quoted decimal USD
# call_usd = "0.50"
# session_tokens = 2000000
# call_tokens = 200000
# warn_at_percent = 80

[approvals]
# timeout_seconds = 120

# [providers.anthropic]
# base_url = "https://api.anthropic.com"
# model = "claude-sonnet-4-5"
# api_key_env = "ANTHROPIC_API_KEY"
# [providers.anthropic.price."claude-sonnet-4-5"]
# input = 3000000            # µUSD per million input tokens
# output = 15000000

# [bindings.react]           # orchestrator -> cache -> provider, by wiring alone
# "astrid.llm" = "cache"
# [bindings.cache]
# "astrid.llm" = "anthropic"

[capsules]
# enabled = ["anthropic", "react"]   # unset: every installed capsule

[kv]
# persist = true             # capsules' kv entries (the cache) outlive the session

[daemon]
# idle_exit_minutes = 30     # 0: never exit
`;
