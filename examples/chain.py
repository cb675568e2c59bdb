"""A prompt-template chain, streamed to the terminal: ChatPromptTemplate | ChatLocal | StrOutputParser."""

from __future__ import annotations

from _model import model_name
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from local_llm_integrations import ChatLocal

prompt = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            "You are a concise senior {language} developer. Answer with code and one sentence.",
        ),
        ("human", "{task}"),
    ]
)
llm = ChatLocal(model=model_name(), temperature=0, max_tokens=256)
chain = prompt | llm | StrOutputParser()

if __name__ == "__main__":
    for piece in chain.stream(
        {"language": "Python", "task": "Write a function that tells whether a number is prime."}
    ):
        print(piece, end="", flush=True)
    print()
