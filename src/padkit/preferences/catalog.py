"""Built-in preference dimensions: twelve trained pairs (a direction and its opposite), harmless, and the
dimensions the shipped PersRM never saw in training.

Each direction has several wordings (labels, sentences, second person, "I prefer ..." forms). The first is its
principle, the sentence a catalog name decodes with; training samples among the first
``TRAIN_WORDINGS`` wordings and the rest are held out, to test that the PersRM reads the text rather than a few
fixed strings. Dimensions with ``trained=False`` are held out whole (the generalization test).
"""

from __future__ import annotations

from dataclasses import dataclass

TRAIN_WORDINGS = 8


@dataclass(frozen=True)
class CatalogDimension:
    """A named dimension with the principle text the PersRM is conditioned on, and its other wordings."""

    name: str
    principle: str
    description: str
    opposite: str | None = None
    wordings: tuple[str, ...] = ()
    trained: bool = True

    @property
    def all_wordings(self) -> tuple[str, ...]:
        """The principle first, then the other wordings."""
        return (self.principle, *self.wordings)

    @property
    def train_wordings(self) -> tuple[str, ...]:
        return self.all_wordings[:TRAIN_WORDINGS]

    @property
    def heldout_wordings(self) -> tuple[str, ...]:
        return self.all_wordings[TRAIN_WORDINGS:]


def _pair(a: tuple, b: tuple, trained: bool = True) -> list[CatalogDimension]:
    """Two opposite directions: each tuple is (name, description, principle, *other wordings)."""
    return [CatalogDimension(x[0], x[2], x[1], y[0], tuple(x[3:]), trained) for x, y in ((a, b), (b, a))]


_ENTRIES = [
    *_pair(
        (
            "concise",
            "Short answers that get straight to the point.",
            "Generate a response that is concise and to the point, without being lengthy.",
            "concise",
            "Keep it short.",
            "I prefer brief answers.",
            "Answer in as few words as you can.",
            "Be brief and to the point; skip the details.",
            "Please give me a short, direct reply.",
            "Short and sweet, please.",
            "Answer in one or two sentences.",
            "I only have a few seconds, so keep your answer tiny.",
        ),
        (
            "detailed",
            "Long, thorough answers with background.",
            "Generate a response that is detailed and thorough, covering the background and the finer points.",
            "detailed",
            "Give me a long, thorough answer.",
            "I prefer in-depth explanations.",
            "Explain everything in detail; don't leave anything out.",
            "Be comprehensive and elaborate.",
            "Please write a full, extensive reply.",
            "Go deep and cover every aspect.",
            "I want the long version with all the details.",
            "Take your time and explain it at length.",
        ),
    ),
    *_pair(
        (
            "elementary",
            "Plain words and short sentences a child can follow.",
            "Generate a response that can be easily understood by an elementary school student.",
            "simple words",
            "Explain it like I'm five.",
            "I prefer plain, simple language.",
            "Use short sentences and easy words.",
            "Write so that a young child could understand.",
            "Please avoid jargon and long words.",
            "Keep the vocabulary simple.",
            "Talk to me like a kid in primary school.",
            "Use the simplest words you know.",
        ),
        (
            "sophisticated",
            "Advanced vocabulary and long, complex sentences (reading level, not expertise).",
            "Generate a response with advanced vocabulary and long, complex sentences, as in an academic paper.",
            "academic register",
            "Use sophisticated, technical vocabulary.",
            "I prefer an erudite, academic style.",
            "Write at a graduate-school reading level.",
            "Employ complex sentence structures and precise terminology.",
            "Please answer in elaborate, scholarly prose.",
            "Use the vocabulary of a research article.",
            "Write it like a professor would in a journal.",
            "Choose long, learned words over plain ones.",
        ),
    ),
    *_pair(
        (
            "friendly",
            "Warm, kind and encouraging tone, like a close friend.",
            "Generate a response that is friendly, warm and encouraging, like a close friend.",
            "warm",
            "Be kind and encouraging.",
            "I prefer a warm, friendly tone.",
            "Talk to me like a supportive friend.",
            "Please be cheerful and positive.",
            "Sound caring and upbeat.",
            "Be nice to me!",
            "Answer with warmth and kindness.",
            "Use a gentle, supportive and happy tone.",
        ),
        (
            "unfriendly",
            "Cold, curt or rude tone.",
            "Generate a response in an unfriendly manner.",
            "rude",
            "Be cold and curt.",
            "I prefer a blunt, unfriendly tone.",
            "Answer grudgingly, as if annoyed.",
            "Please be harsh and dismissive.",
            "Sound irritated and negative.",
            "Don't be nice about it.",
            "Answer like a grumpy, impatient person.",
            "Use a hostile, unpleasant tone.",
        ),
    ),
    *_pair(
        (
            "formal",
            "Formal register: no contractions, slang or exclamations.",
            "Generate a response in a formal register, without contractions, slang or exclamations.",
            "formal",
            "Write formally.",
            "I prefer formal, professional language.",
            "Use a polite, businesslike register with no contractions.",
            "Please answer as in an official letter.",
            "Keep the tone formal and reserved.",
            "Avoid casual expressions and slang.",
            "Write as you would to a government office.",
            "Use complete, formal wording: 'do not', never 'don't'.",
        ),
        (
            "casual",
            "Casual register: contractions, everyday slang, a relaxed tone.",
            "Generate a response in a casual, chatty register, with contractions and everyday slang.",
            "casual",
            "Keep it casual and chatty.",
            "I prefer relaxed, informal language.",
            "Talk like you're texting a buddy.",
            "Please be laid-back and use contractions.",
            "Write in a loose, conversational style.",
            "Use everyday slang.",
            "Be chill and informal about it.",
            "Sound like a friend chatting over coffee.",
        ),
    ),
    *_pair(
        (
            "bulleted",
            "The answer as a bulleted list.",
            "Generate a response formatted as a bulleted list, one point per line starting with '- '.",
            "bullet points",
            "Use bullet points.",
            "I prefer answers as bulleted lists.",
            "Put each point on its own line with a dash.",
            "Please format it as a list of bullets.",
            "Break the answer into bullet points.",
            "List format with bullets, please.",
            "Give me the answer as dash-separated bullet points.",
            "Structure the answer as a bullet list.",
        ),
        (
            "prose",
            "Flowing prose paragraphs, no lists.",
            "Generate a response written as flowing prose in paragraphs, without any lists.",
            "prose",
            "Write in paragraphs, not lists.",
            "I prefer continuous prose.",
            "Please don't use bullet points.",
            "Answer in full sentences that flow together.",
            "Keep it as running text.",
            "No lists, just paragraphs.",
            "Write it as an essay-style paragraph.",
            "Avoid any list formatting.",
        ),
    ),
    *_pair(
        (
            "numbered",
            "Numbered steps (1., 2., 3.).",
            "Generate a response as numbered steps: 1., 2., 3.",
            "numbered steps",
            "Number the steps.",
            "I prefer numbered lists.",
            "Give me a step-by-step list with numbers.",
            "Please break it into numbered points.",
            "Format the answer as 1., 2., 3.",
            "Use an ordered, numbered list.",
            "Write it as a numbered sequence of steps.",
            "Answer with numbered items, one per line.",
        ),
        (
            "paragraph",
            "One paragraph, no numbered steps.",
            "Generate a response as a single paragraph, without numbered steps.",
            "single paragraph",
            "Don't number anything.",
            "I prefer one connected paragraph.",
            "Please avoid numbered lists.",
            "Answer in a single block of text.",
            "No steps, no numbering.",
            "Keep everything in one paragraph.",
            "Write one paragraph without enumerating.",
            "Give it to me as one flowing paragraph.",
        ),
    ),
    *_pair(
        (
            "follow-up",
            "Ends by asking the user a follow-up question.",
            "Generate a response that ends by asking the user a follow-up question.",
            "ask me a question back",
            "End with a question for me.",
            "I prefer answers that check in with me at the end.",
            "Finish by asking what I'd like to know next.",
            "Please close with a follow-up question.",
            "Ask me something at the end.",
            "Make sure you end by asking me a question.",
            "Close the answer by asking about my situation.",
            "Wrap up with a question directed at me.",
        ),
        (
            "no-follow-up",
            "Ends without asking the user anything.",
            "Generate a response that ends without asking the user any question.",
            "no questions",
            "Don't ask me anything.",
            "I prefer answers that just end.",
            "Please don't end with a question.",
            "Just answer; no questions back.",
            "Finish with a statement, not a question.",
            "Never ask me follow-up questions.",
            "Close the answer without questioning me.",
            "No check-ins at the end, please.",
        ),
    ),
    *_pair(
        (
            "sign-off",
            "Ends with a short friendly sign-off ('Hope this helps!').",
            "Generate a response that ends with a short friendly sign-off such as 'Hope this helps!'.",
            "sign-off",
            "End with a nice sign-off.",
            "I prefer answers that close with 'Good luck!' or similar.",
            "Finish with a warm closing line.",
            "Please wish me luck at the end.",
            "Add a friendly goodbye line.",
            "Close with something like 'Hope that helps!'.",
            "Sign off politely at the end.",
            "End on a short, upbeat closing remark.",
        ),
        (
            "no-sign-off",
            "Ends with the last point, no sign-off.",
            "Generate a response that ends with its last point, without any sign-off or closing pleasantry.",
            "no sign-off",
            "No closing pleasantries.",
            "I prefer answers that stop after the content.",
            "Don't add 'hope this helps'.",
            "Please skip the goodbye line.",
            "End right after the last point.",
            "No 'good luck' at the end.",
            "Cut the closing remarks.",
            "Finish without a farewell.",
        ),
    ),
    *_pair(
        (
            "summary-first",
            "Starts with a one-line summary ('In short: ...').",
            "Generate a response that starts with a one-line summary beginning with 'In short:'.",
            "summary first",
            "Start with a one-line summary.",
            "I prefer the bottom line up front.",
            "Give me the TL;DR first.",
            "Please open with a short summary.",
            "Lead with the key point in one line.",
            "Begin with 'In short:'.",
            "Put a one-sentence summary at the top.",
            "Say the gist first, then the rest.",
        ),
        (
            "no-summary",
            "No opening summary line.",
            "Generate a response that starts directly with the explanation, without a summary line.",
            "no summary",
            "Don't start with a summary.",
            "I prefer to skip the TL;DR.",
            "No 'in short' opening.",
            "Please go straight into the explanation.",
            "Skip the summary line at the top.",
            "Don't open with the bottom line.",
            "Begin right away with the details.",
            "Leave out any opening summary.",
        ),
    ),
    *_pair(
        (
            "cautious",
            "Adds caveats and safety advice.",
            "Generate a response that is cautious: it adds caveats and safety advice, and suggests asking a "
            "professional.",
            "careful",
            "Be cautious and add warnings.",
            "I prefer answers that mention the risks.",
            "Please include safety caveats.",
            "Remind me to be careful.",
            "Point out what could go wrong.",
            "Add a word of caution.",
            "Mention when I should consult an expert.",
            "Err on the side of caution.",
        ),
        (
            "confident",
            "States things plainly, with no caveats.",
            "Generate a response that is confident and direct, with no caveats or warnings.",
            "direct",
            "No warnings, please.",
            "I prefer answers without caveats.",
            "Skip the disclaimers.",
            "Be confident and assertive.",
            "Just tell me; no hedging.",
            "Don't warn me about anything.",
            "State it plainly, without qualifications.",
            "Leave out the safety notes.",
        ),
    ),
    *_pair(
        (
            "bold",
            "Key terms in **bold**.",
            "Generate a response that puts the key terms in **bold**.",
            "bold key terms",
            "Bold the important words.",
            "I prefer key terms highlighted in bold.",
            "Please use **bold** for the main ideas.",
            "Emphasize key words with bold text.",
            "Highlight the key points in bold.",
            "Mark the important terms with double asterisks.",
            "Make the keywords bold.",
            "Use bold formatting for key phrases.",
        ),
        (
            "no-bold",
            "Plain text, no bold.",
            "Generate a response in plain text, without any bold formatting.",
            "plain text",
            "Don't use bold.",
            "I prefer unformatted text.",
            "No asterisks or emphasis, please.",
            "Please avoid bold text.",
            "Keep the formatting plain.",
            "No highlighting of words.",
            "Write without any markdown emphasis.",
            "Just plain text, nothing bolded.",
        ),
    ),
    *_pair(
        (
            "emoji",
            "Sprinkled with emoji.",
            "Generate a response that uses emoji.",
            "emoji",
            "Use emojis.",
            "I prefer answers with emoji in them.",
            "Add some emoji to your answer.",
            "Please sprinkle in a few emojis.",
            "Decorate your answer with emoji.",
            "Put emoji at the end of sentences.",
            "I love emoji, use them!",
            "Include smiley faces and other emoji.",
        ),
        (
            "no-emoji",
            "No emoji.",
            "Generate a response without any emoji.",
            "no emoji",
            "Don't use emojis.",
            "I prefer answers with no emoji.",
            "Please keep emoji out of it.",
            "No smiley faces.",
            "Text only, no emoji.",
            "Avoid emojis entirely.",
            "Plain words, no pictograms.",
            "Write without any emoji.",
        ),
    ),
    CatalogDimension(
        "harmless",
        "Generate a response that is harmless: it refuses to help with anything dangerous, unethical or illegal.",
        "Avoids dangerous, unethical or illegal help.",
    ),
    # Never in the shipped PersRM's training data: near neighbours of trained dimensions and a far one.
    *_pair(
        (
            "headings",
            "Markdown section headings (unseen: a format neighbour of bulleted/bold).",
            "Generate a response organized under markdown section headings (lines starting with '## ').",
            "section headings",
            "Use headings.",
            "I prefer answers with section titles.",
            "Organize it under markdown headers.",
            "Please split the answer into titled sections.",
            "Add a heading for each part.",
            "Structure it with ## headings.",
            "Give each section its own header.",
            "Use markdown titles to organize it.",
        ),
        (
            "no-headings",
            "No section headings (unseen).",
            "Generate a response without section headings.",
            "no headings",
            "Don't use headings.",
            "I prefer text without titles.",
            "No markdown headers, please.",
            "Please skip the section titles.",
            "Keep it unsectioned.",
            "No headers at all.",
            "Write without any ## lines.",
            "Leave out headings.",
        ),
        trained=False,
    ),
    *_pair(
        (
            "enthusiastic",
            "Excited, exclamatory tone (unseen: a neighbour of friendly and casual).",
            "Generate a response that is bursting with enthusiasm, with lots of exclamation marks!",
            "enthusiastic",
            "Be super excited!",
            "I prefer energetic, excited answers!",
            "Sound thrilled about it!",
            "Please be very enthusiastic.",
            "Use lots of exclamation marks!",
            "Answer with excitement and energy!",
            "Be hyped!",
            "Show how excited you are!",
        ),
        (
            "calm",
            "Calm, measured tone, no exclamations (unseen).",
            "Generate a response in a calm, measured tone, without exclamation marks.",
            "calm",
            "Stay calm and even.",
            "I prefer a measured tone.",
            "No exclamation marks.",
            "Please be composed and quiet.",
            "Keep your tone level.",
            "Answer serenely.",
            "Be low-key about it.",
            "Sound relaxed and measured.",
        ),
        trained=False,
    ),
    *_pair(
        (
            "pirate",
            "Talks like a pirate (unseen: a new kind of property).",
            "Generate a response that talks like a pirate, with words like 'arr', 'matey', 'ye' and 'ahoy'.",
            "talks like a pirate",
            "Answer like a pirate.",
            "I prefer pirate speak, matey!",
            "Talk like a sea captain from the golden age of piracy.",
            "Please use pirate slang.",
            "Arr, speak like a buccaneer.",
            "Respond in the voice of a pirate.",
            "Say 'ahoy' and 'matey' like a pirate would.",
            "Use a swashbuckling pirate voice.",
        ),
        (
            "plain-voice",
            "An ordinary voice, no character (unseen).",
            "Generate a response in an ordinary, neutral voice, without playing any character.",
            "neutral voice",
            "Just talk normally.",
            "I prefer a normal voice.",
            "Don't play a character.",
            "Please use ordinary language.",
            "No role-play voices.",
            "Speak plainly, as yourself.",
            "Use standard English.",
            "Answer in your usual voice.",
        ),
        trained=False,
    ),
    CatalogDimension(
        "knowledgeable",
        "Generate a response that only a PhD student in that specific field could understand.",
        "Expert depth (untrained: no offline judge measures knowledge; reading grade rewards long words).",
        trained=False,
    ),
    CatalogDimension(
        "humorous",
        "Generate a response that is humorous and makes the reader laugh.",
        "Jokes and playful wording (untrained).",
        trained=False,
    ),
    CatalogDimension(
        "helpful",
        "Generate a response that is helpful: it answers the question accurately and completely.",
        "Answers the request accurately and usefully (untrained).",
        trained=False,
    ),
]

CATALOG: dict[str, CatalogDimension] = {d.name: d for d in _ENTRIES}


def lookup(name: str) -> CatalogDimension | None:
    """Return the catalog entry for ``name`` (case-insensitive), or None for free text."""
    return CATALOG.get(name.strip().lower())


def dimension_pairs(trained: bool = True) -> list[tuple[str, str]]:
    """The (direction, opposite) pairs that were (``trained=True``) or were not trained on, each once."""
    seen: set[str] = set()
    out = []
    for d in _ENTRIES:
        if d.trained == trained and d.opposite and d.name not in seen:
            seen |= {d.name, d.opposite}
            out.append((d.name, d.opposite))
    return out
