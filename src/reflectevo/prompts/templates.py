"""Reflection and correction prompts, built from the trial-1 conversation.

Both continue the trial-1 chat: the user turn that asked the question, the model's failed answer as
the assistant turn, then a new user turn. This keeps one chat-template policy (the model's own) for
every stage, and the correction prompt always contains the *original* failed trial 1.
"""

from __future__ import annotations

from reflectevo.records import Messages

FEEDBACK = "Your answer is incorrect."

REFLECT = (
    "{feedback}\n\n"
    "Reflect on your previous solution before trying again. {instruction}\n"
    "Do not solve the problem again and do not state the final answer: write only the reflection."
)

CORRECT = (
    "{feedback}\n\n"
    "Here is a reflection on your previous solution:\n{reflection}\n\n"
    "Using this reflection, solve the problem again from the start. {answer_format}"
)


def feedback_text(feedback: str) -> str:
    """The binary feedback, plus the verifier's error text when it has more to say (e.g. a test failure)."""
    if feedback and feedback.strip().lower() not in ("incorrect", "correct"):
        return f"{FEEDBACK}\n{feedback.strip()}"
    return FEEDBACK


def after_trial1(trial1_messages: Messages, trial1_response: str, user_turn: str) -> Messages:
    """The trial-1 chat continued: its failed answer as the assistant turn, then a new user turn."""
    return [*trial1_messages, {"role": "assistant", "content": trial1_response},
            {"role": "user", "content": user_turn}]


def reflection_prompt(trial1_messages: Messages, trial1_response: str, feedback: str,
                      instruction: str) -> Messages:
    return after_trial1(trial1_messages, trial1_response,
                        REFLECT.format(feedback=feedback_text(feedback), instruction=instruction))


def correction_prompt(trial1_messages: Messages, trial1_response: str, feedback: str,
                      reflection: str, answer_format: str) -> Messages:
    return after_trial1(trial1_messages, trial1_response,
                        CORRECT.format(feedback=feedback_text(feedback), reflection=reflection.strip(),
                                       answer_format=answer_format))


RETRY = (
    "{feedback}\n\n"
    "Solve the problem again from the start. {answer_format}"
)


def retry_prompt(trial1_messages: Messages, trial1_response: str, feedback: str, answer_format: str) -> Messages:
    """A second try with the feedback and no reflection: the baseline a reflection's value is measured
    against (the paper code's reflection mode 3). Only the reflection is missing from the correction prompt."""
    return after_trial1(trial1_messages, trial1_response,
                        RETRY.format(feedback=feedback_text(feedback), answer_format=answer_format))


# At test time, and in training rows, no pool instruction is given: the trained model must reflect on
# its own. Pool instructions only diversify the reflections generated for the training data.
TEST_TIME_INSTRUCTION = "Find the mistakes in your previous solution and explain how to correct them."

REFLECT_AND_CORRECT = (
    "{feedback}\n\n"
    "Reflect on your previous solution: find its mistakes and explain how to correct them. "
    "{instruction}Then solve the problem again from the start. {answer_format}"
)


def test_reflection_prompt(trial1_messages: Messages, trial1_response: str, feedback: str) -> Messages:
    """The reflection prompt used at test time and in training rows (setting II stage 1, DPO)."""
    return reflection_prompt(trial1_messages, trial1_response, feedback, TEST_TIME_INSTRUCTION)


def reflect_and_correct_prompt(trial1_messages: Messages, trial1_response: str, feedback: str,
                               answer_format: str, instruction: str | None = None) -> Messages:
    """One-stage (settings I and V): one reply holds the reflection and then the corrected solution.

    Without `instruction` this is the test-time prompt (what `evaluate --mode one-stage` sends and what
    setting I trains on). Setting V's RL prompts may add a pool instruction as one more sentence before
    "Then solve...", so its rollouts explore the pool's ways of reflecting; the rest stays identical.
    """
    extra = f"{instruction.strip()} " if instruction and instruction.strip() else ""
    return after_trial1(trial1_messages, trial1_response,
                        REFLECT_AND_CORRECT.format(feedback=feedback_text(feedback), instruction=extra,
                                                   answer_format=answer_format))


# What REFLECT puts around the instruction (after the feedback), to read the instruction back.
_REFLECT_HEAD, _REFLECT_TAIL = REFLECT.removeprefix("{feedback}").split("{instruction}")


def instruction_of(reflection_messages: Messages) -> str | None:
    """The pool instruction a stored reflection prompt (built by `reflection_prompt`) showed, or None
    when the prompt was not built by this template (e.g. one imported from the paper's files)."""
    if not reflection_messages or reflection_messages[-1].get("role") != "user":
        return None
    text = reflection_messages[-1].get("content", "")
    start, end = text.find(_REFLECT_HEAD), text.rfind(_REFLECT_TAIL)
    if start < 0 or end < start + len(_REFLECT_HEAD):
        return None
    return text[start + len(_REFLECT_HEAD):end].strip() or None


# Oracle-free evaluation: before reflecting, the model judges its own answer; no gold feedback is shown.
SELF_CHECK = (
    "Check your previous solution carefully: is its final answer correct? Do not solve the problem again.\n"
    'End your reply with exactly one line: "Verdict: CORRECT" or "Verdict: INCORRECT".'
)


def self_check_prompt(trial1_messages: Messages, trial1_response: str) -> Messages:
    return after_trial1(trial1_messages, trial1_response, SELF_CHECK)
