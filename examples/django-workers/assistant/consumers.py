"""An AI assistant's socket: ``ws/assistant/?llm=...&character_id=...`` (the
route in estuary.toml declares both, with defaults, so ``scope["query"]``
always has them). Each question is answered as a stream of
``{"type": "chunk", "text": ...}`` frames and a ``{"type": "done"}``; the
worker runs each connection on its own task, so a long stream holds up no
other connection (the same connection's next message waits its turn)."""

import json

from django_estuary.consumer import EstuaryConsumer

from . import model

MAX_PROMPT_CHARS = 4000


class AssistantConsumer(EstuaryConsumer):
    async def connect(self):
        query = self.scope["query"]
        llm = query.get("llm", "gpt-4o")
        character = query.get("character_id", "1")
        if llm not in model.MODELS:
            await self.close(reason=f"unknown llm {llm!r}: one of {', '.join(model.MODELS)}")  # HTTP 403
            return
        if not (isinstance(character, str) and character.isdigit() and int(character) in model.CHARACTERS):
            await self.close(reason=f"unknown character_id {character!r}")
            return
        self.state.update(llm=llm, character_id=int(character), turns=0)
        await self.accept()
        name, persona = model.CHARACTERS[int(character)]
        await self.send_json({"type": "ready", "llm": llm, "character_id": int(character), "character": name, "persona": persona})

    async def receive(self, text_data=None, bytes_data=None):
        try:
            request = json.loads(text_data) if text_data is not None else None
        except ValueError:
            request = None
        prompt = request.get("message") if isinstance(request, dict) else None
        if not isinstance(prompt, str) or not 1 <= len(prompt.strip()) <= MAX_PROMPT_CHARS:
            return await self.send_json({"type": "error", "message": f'send {{"message": "..."}} (1 to {MAX_PROMPT_CHARS} characters)'})
        self.state["turns"] += 1
        async for chunk in model.stream(self.state["llm"], self.state["character_id"], prompt.strip()):
            await self.send_json({"type": "chunk", "text": chunk})
        await self.send_json({"type": "done", "turn": self.state["turns"]})

    async def send_json(self, content):
        await self.send(text_data=json.dumps(content))
