"""Translation between the API protocols the gateway speaks: Anthropic Messages, OpenAI
chat completions and OpenAI Responses. Pure functions and small stream state machines,
no I/O, so every mapping can be tested on recorded shapes alone."""
