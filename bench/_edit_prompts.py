"""Prompts for the speculative decoding bench, in two sets.

"edit": rewriting a text with its typos fixed, fixing typos in a list of sentences, reformatting code
and continuing a list: the tasks where prompt lookup (n-gram drafts) has something to copy.
"free": a poem, an explanation, a story and advice: answers that copy nothing from their prompt, where
drafting can only cost, and the cost check must refuse it.
"""

from __future__ import annotations

REWRITE = """Rewrite the following text, fixing its typos. Answer with the corrected text only.

The old lighthouse stood at the edge of the cliff for more then two hundred years. Every night the keeper \
climbed the narow stairs, lit the great lamp and watched the ships pass safely around the rocks below. \
When the storms came in winter, the waves wuold crash against the walls and the wind howled through the \
windows, but the light never went out. The vilagers said that as long as the lighthouse stood, no ship \
would ever be lost on there coast again."""

FIX_TYPOS = """Fix the typos in these sentences. Answer with the corrected sentences only, one per line.

1. The meeting has been moved to thursday afternon at three o'clock.
2. Please remeber to bring your laptop and the printed reports.
3. We recieved the new shipment of chairs yesterday morning.
4. The budget for the next quater will be discussed by the whole team.
5. Our office will be closed on monday because of the public holliday.
6. Everyone is invited to the anual dinner at the end of the month."""

REFORMAT_CODE = """Reformat this Python code with four-space indentation and one statement per line. \
Answer with the code only.

def total_price(items, tax_rate):
  subtotal = 0; count = 0
  for item in items:
   subtotal += item.price * item.quantity; count += item.quantity
  tax = subtotal * tax_rate; total = subtotal + tax
  return {"subtotal": subtotal, "tax": tax, "total": total, "count": count}

def cheapest(items):
  best = None
  for item in items:
   if best is None or item.price < best.price: best = item
  return best"""

CONTINUE_LIST = """Continue this list with six more items in exactly the same format. Answer with the whole list.

- Monday: 08:00 team meeting in room 4, bring the weekly report
- Tuesday: 09:30 customer call in room 2, bring the sales figures
- Wednesday: 10:00 design review in room 4, bring the new drawings
- Thursday: 08:30 budget meeting in room 1, bring the cost estimates
- Friday: 11:00 project update in room 3, bring the open questions"""

PROMPTS = {
    "rewrite": REWRITE,
    "fix-typos": FIX_TYPOS,
    "reformat-code": REFORMAT_CODE,
    "continue-list": CONTINUE_LIST,
}

FREE = {
    "poem": "Write a short poem about a fox crossing a frozen river at dawn.",
    "explain": "Explain in a few paragraphs why the sky is blue and why sunsets are red.",
    "story": "Tell a short story about a baker who finds a mysterious key inside a loaf of bread.",
    "advice": "Give some practical advice to someone who is starting to learn the piano as an adult.",
}

SETS = {"edit": PROMPTS, "free": FREE}
