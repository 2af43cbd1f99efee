"""FAKE aiopslab.orchestrator.evaluators.quantitative: the step and token
counts of the results, and the comparison helpers of the real module.

As the real module, it imports tiktoken and builds its tokenizer AT IMPORT
(`encoding_for_model("gpt-3.5-turbo")`, i.e. cl100k_base): importing the
orchestrator fails when tiktoken's data is neither cached nor downloadable.
(The tests put a FAKE tiktoken beside this package; it has the same rule.)"""

import tiktoken

token_model = "gpt-3.5-turbo"
tokenizer = tiktoken.encoding_for_model(token_model)


def num_steps_taken(trace):
    return len([item for item in trace if item.role == "assistant"])


def out_tokens(trace):
    agent_text = "".join(item.content for item in trace if item.role == "assistant")
    return len(tokenizer.encode(agent_text, disallowed_special=()))


def in_tokens(trace):
    # As the real one: encoded with tiktoken's default special-token check.
    env_text = "".join(item.content for item in trace if item.role != "assistant")
    return len(tokenizer.encode(env_text))


def is_exact_match(pred, target):
    """["x"] and "x" count as equal."""

    def as_list(value):
        return value if isinstance(value, list) else [value]

    return as_list(pred) == as_list(target)


def is_exact_match_lower(pred, target):
    return pred.strip().lower() == target.strip().lower()


def is_subset(pred, target):
    return set(pred).issubset(set(target))


def is_superset(pred, target):
    return set(pred).issuperset(set(target))
