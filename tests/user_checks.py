"""Answer checks as a user would write them, for the tests (`answer_check: user_checks:NAME`)."""

import collections
import hashlib
import json
import os


def always_right(prompt_messages, gold, sample):
    return True


def never_right(prompt_messages, gold, sample):
    return False


_CALLS: collections.Counter = collections.Counter()  # per question, in this process


def coin(prompt_messages, gold, sample):
    """Right for about half of the samples (a hash of the text); whatever the sampler draws,
    every sample of the "Say hello." row is right (a solved prompt) and only the first of
    "Name a colour." (a pair whose rejected answer is its second sample). Each call is appended
    to the file named by CHECK_LOG when it is set."""
    question = prompt_messages[-1]["content"]
    _CALLS[question] += 1
    if question == "Say hello.":
        right = True
    elif question == "Name a colour.":
        right = _CALLS[question] == 1
    else:
        right = hashlib.sha256(sample.encode("utf-8")).digest()[0] % 2 == 0
    log = os.environ.get("CHECK_LOG")
    if log:
        record = {"question": prompt_messages[-1]["content"], "sample": sample, "right": right}
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    return right


def fails_on_hamlet(prompt_messages, gold, sample):
    if "Hamlet" in prompt_messages[-1]["content"]:
        raise ValueError("cannot judge this one")
    return False
