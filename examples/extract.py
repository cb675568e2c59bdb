"""Structured extraction into a pydantic model: the grammar makes the output always valid."""

from __future__ import annotations

from _model import model_name
from pydantic import BaseModel, Field

from local_llm_integrations import ChatLocal


class Person(BaseModel):
    """A person mentioned in the text."""

    name: str = Field(description="Full name")
    born: int = Field(description="Year of birth")
    occupation: str = Field(description="What they are known for")


class People(BaseModel):
    """Everyone mentioned in the text."""

    people: list[Person]


TEXT = (
    "Ada Lovelace, born in 1815, is known as the first computer programmer. "
    "Alan Turing (born 1912) was a mathematician who formalised computation."
)

if __name__ == "__main__":
    extractor = ChatLocal(model=model_name(), temperature=0).with_structured_output(People)
    result = extractor.invoke(f"Extract every person from this text:\n{TEXT}")
    assert isinstance(result, People)
    for person in result.people:
        print(person.model_dump_json())
