"""The eight prompts that batch invariance is measured on (bench/determinism.py) and tested on
(tests/server/test_invariance.py): short and long questions, two of them long enough that
their tokens sit past position 256, where flash attention would split a lone row's KV cells
across threads. One list, so the test guards what the bench measured."""

FACTS = " ".join(f"Fact {i}: the number {i} is {'even' if i % 2 == 0 else 'odd'}." for i in range(40))
PROMPTS = [
    "Why is the sky blue?",
    "Write a short poem about the sea.",
    f"Read these facts and answer.\n{FACTS}\nWhich of the facts mention the number 7?",
    "What is 17 times 23?",
    "List three uses of copper.",
    f"Here are some notes.\n{FACTS}\nSummarise the notes in one sentence.",
    "Translate 'good morning' into French.",
    "Describe how a bicycle stays upright.",
]
