"""server.limits: max_tokens, n and prompt tokens give 400s naming the limit; the token
reservation a request makes is prompt + n x max_tokens per prompt."""

import pytest

from deployments.errors import InvalidRequest
from deployments.engine.protocol import Endpoint
from deployments.api.prompt_tokens import PromptCounter
from deployments.tenancy.request_limits import check_limits

CHAT = [{"role": "user", "content": "Hello"}]


def _limits(**over):
    limits = {"max_tokens": None, "max_n": 4, "max_prompt_tokens": None, "max_model_len": 512, "count_prompt": None}
    return {**limits, **over}


@pytest.fixture(scope="module")
def counter(demo_assets):
    return PromptCounter.load(str(demo_assets / "base"))


@pytest.mark.parametrize(
    "endpoint, body, limits, param, text",
    [
        (Endpoint.COMPLETIONS, {"prompt": "x", "max_tokens": 65}, {"max_tokens": 64}, "max_tokens", "server.limits.max_tokens"),
        (Endpoint.CHAT, {"messages": CHAT, "max_completion_tokens": 65}, {"max_tokens": 64}, "max_completion_tokens", "limit of 64"),
        (Endpoint.CHAT, {"messages": CHAT, "max_tokens": 65}, {"max_tokens": 64}, "max_tokens", "limit of 64"),
        (Endpoint.COMPLETIONS, {"prompt": "x", "n": 5}, {}, "n", "server.limits.max_n"),
    ],
)
def test_limits_are_400s_naming_the_limit(endpoint, body, limits, param, text):
    with pytest.raises(InvalidRequest) as err:
        check_limits(body, endpoint, **_limits(**limits))
    assert err.value.param == param and text in err.value.message


def test_missing_max_tokens_is_capped_at_the_limit_without_touching_the_callers_dict():
    body = {"prompt": "x"}
    admitted = check_limits(body, Endpoint.COMPLETIONS, **_limits(max_tokens=32))
    assert admitted.body["max_tokens"] == 32 and "max_tokens" not in body
    chat = check_limits({"messages": CHAT}, Endpoint.CHAT, **_limits(max_tokens=32))
    assert chat.body["max_completion_tokens"] == 32
    within = check_limits({"prompt": "x", "max_tokens": 8}, Endpoint.COMPLETIONS, **_limits(max_tokens=32))
    assert within.body["max_tokens"] == 8


def test_prompt_tokens_counted_like_the_engine(counter):
    assert counter({"prompt": "Hello world"}, Endpoint.COMPLETIONS) == [12]  # BOS + 11 bytes
    assert counter({"prompt": ["ab", "abcd"]}, Endpoint.COMPLETIONS) == [3, 5]
    assert counter({"prompt": [5, 6, 7]}, Endpoint.COMPLETIONS) == [3]
    assert counter({"prompt": [[5, 6], [7]]}, Endpoint.COMPLETIONS) == [2, 1]
    rendered = counter.tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert rendered.startswith("<s>")  # the template writes BOS itself: it is not added twice
    assert counter({"messages": CHAT}, Endpoint.CHAT) == [1 + len(rendered.removeprefix("<s>").encode())]
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
    assert counter({"messages": parts}, Endpoint.CHAT) == counter({"messages": CHAT}, Endpoint.CHAT)


def test_long_prompts_are_400_naming_the_limit(counter):
    with pytest.raises(InvalidRequest) as err:
        check_limits({"prompt": "x" * 40}, Endpoint.COMPLETIONS, **_limits(max_prompt_tokens=40, count_prompt=counter))
    assert err.value.param == "prompt" and "41 tokens" in err.value.message and "max_prompt_tokens" in err.value.message
    with pytest.raises(InvalidRequest) as err:
        check_limits({"messages": CHAT}, Endpoint.CHAT, **_limits(max_prompt_tokens=10, count_prompt=counter))
    assert err.value.param == "messages"
    check_limits({"prompt": "x" * 39}, Endpoint.COMPLETIONS, **_limits(max_prompt_tokens=40, count_prompt=counter))


def test_reservation_is_prompt_plus_n_times_max_tokens_per_prompt(counter):
    one = check_limits({"prompt": "abc", "max_tokens": 10, "n": 2}, Endpoint.COMPLETIONS, **_limits(count_prompt=counter))
    assert one.max_tokens_reserved == 4 + 2 * 10
    batch = check_limits({"prompt": ["a", "abc"], "max_tokens": 5}, Endpoint.COMPLETIONS, **_limits(count_prompt=counter))
    assert batch.max_tokens_reserved == (2 + 5) + (4 + 5)
    no_max = check_limits({"prompt": "abc"}, Endpoint.COMPLETIONS, **_limits(count_prompt=counter))
    assert no_max.max_tokens_reserved == 512  # the engine may fill the context
    without_counting = check_limits({"prompt": "abc"}, Endpoint.COMPLETIONS, **_limits())
    assert without_counting.max_tokens_reserved == 0
