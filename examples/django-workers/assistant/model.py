"""A fake language model: no network, a reply made from the prompt, streamed
a few words at a time with a pause between chunks (as a model streams
tokens). ``pause`` is what a test replaces to hold a stream where it wants."""

import asyncio

from django.conf import settings

MODELS = ("gpt-4o", "claude", "llama3", "ernie")
CHARACTERS = {
    1: ("Ada", "a patient tutor"),
    2: ("Blaise", "a terse engineer"),
    3: ("Cleo", "a cheerful guide"),
}
WORDS_PER_CHUNK = 3


async def pause():
    """Between two chunks."""
    await asyncio.sleep(settings.ASSISTANT_CHUNK_DELAY)


def reply(llm: str, character_id: int, prompt: str) -> str:
    name, persona = CHARACTERS[character_id]
    topic = " ".join(prompt.split()[:12]) or "nothing in particular"
    return (
        f"{name} here, {persona}, answering through {llm}. You asked about {topic}. "
        "A real model would stream its tokens now; this one streams these words, "
        "a few at a time, so you can watch the reply arrive while other sockets carry on."
    )


async def stream(llm: str, character_id: int, prompt: str):
    """The reply in chunks of a few words."""
    words = reply(llm, character_id, prompt).split(" ")
    for start in range(0, len(words), WORDS_PER_CHUNK):
        if start:
            await pause()
        yield " ".join(words[start : start + WORDS_PER_CHUNK]) + (" " if start + WORDS_PER_CHUNK < len(words) else "")
