# ruff: noqa: UP007, UP045  (Optional/Union spelled as users write them; same schemas)
r"""JSON schemas that pydantic v2 emits for everyday models, for the structured-output tests.

Each :class:`SchemaCase` holds the schema (``model_json_schema()``, or
``TypeAdapter(...).json_schema()`` for TypedDicts and bare types), the type that
produced it (to validate outputs with pydantic as well as ``jsonschema``), and
either ``None`` (the grammar must enforce it) or the ``(keyword, JSON pointer)``
the converter must name when it refuses the schema.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (
    UUID4,
    AnyUrl,
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    TypeAdapter,
    conint,
    constr,
)
from pydantic.networks import IPv4Address
from typing_extensions import NotRequired, TypedDict

try:  # EmailStr needs the optional email-validator package
    import email_validator  # noqa: F401
    from pydantic import EmailStr

    HAS_EMAIL_VALIDATOR = True
except ImportError:  # pragma: no cover - depends on the environment
    HAS_EMAIL_VALIDATOR = False


@dataclass(frozen=True)
class SchemaCase:
    """One row of the table."""

    name: str
    schema: dict[str, Any]
    type_: Any
    """What pydantic validates outputs with (a model, TypedDict or annotation)."""
    unsupported: tuple[str, str] | None = None
    """``(keyword, pointer)`` the error must name, or ``None`` if it must convert."""
    pydantic_exact: bool = True
    """Whether the schema says all pydantic checks (``Decimal``'s string form does not)."""

    def validate_with_pydantic(self, text: str) -> None:
        """Parse ``text`` with pydantic; raises ``ValidationError`` if it is not valid."""
        if self.pydantic_exact:
            TypeAdapter(self.type_).validate_json(text)


# -- everyday models


class Color(str, enum.Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Person(BaseModel):
    name: str
    nickname: Optional[str] = None
    age: Optional[int] = None


class Shape(BaseModel):
    size: Union[int, str]
    color: Literal["red", "green", "blue"]


class Paint(BaseModel):
    color: Color
    priority: Priority = Priority.LOW


class Address(BaseModel):
    street: str
    city: str
    zip_code: Annotated[str, Field(pattern=r"^\d{5}$")]


class User(BaseModel):
    name: str
    address: Address
    billing: Optional[Address] = None


class Tags(BaseModel):
    tags: list[str] = Field(min_length=1, max_length=3)
    scores: list[int] = Field(default_factory=list, max_length=2)


class Inventory(BaseModel):
    counts: dict[str, int]


class Directory(BaseModel):
    offices: dict[str, Address]


class Event(BaseModel):
    at: dt.datetime
    day: dt.date
    starts: dt.time
    id: uuid.UUID


class Contact(BaseModel):
    email: Annotated[str, Field(pattern=r"^[\w.+-]+@[\w-]+\.[\w.-]+$")]


class Year(BaseModel):
    year: str = Field(pattern=r"^\d{4}$")


class LooseEmail(BaseModel):
    email: constr(pattern=r"^\S+@\S+$")  # type: ignore[valid-type]


class FullName(BaseModel):
    full_name: str = Field(pattern=r"^\w+\s\w+$")


class Shorthands(BaseModel):
    code: str = Field(pattern=r"^\D{2}\W\d$")
    version: str = Field(pattern=r"^[\d.-]+$")
    slug: str = Field(pattern=r"^[^\s/]+$")


class Lengths(BaseModel):
    title: str = Field(min_length=2, max_length=8)
    note: str = Field(default="", max_length=5)


class Bounds(BaseModel):
    rating: int = Field(ge=1, le=10)
    delta: int = Field(gt=-5, lt=5)
    count: conint(ge=0)  # type: ignore[valid-type]
    big: int = Field(ge=95, le=1234)


class Ratios(BaseModel):
    share: float = Field(ge=0, le=1)
    price: float = Field(gt=0)
    temperature: float = Field(ge=-40, lt=60)


class Multiple(BaseModel):
    step: int = Field(multiple_of=5)


class TreeNode(BaseModel):
    value: int
    children: list[TreeNode] = Field(default_factory=list, max_length=3)


class LinkedNode(BaseModel):
    value: str = Field(max_length=4)
    next: Optional[LinkedNode] = None


class Pair(BaseModel):
    pair: tuple[int, str]
    rest: tuple[int, ...] = ()


class Annotated_(BaseModel):
    age: Annotated[int, Field(ge=0, le=130, description="years")]
    code: Annotated[str, Field(max_length=5, title="Code")]


class Defaults(BaseModel):
    name: str = "anon"
    active: bool = True
    ratio: float = 0.5
    tags: list[str] = []
    mode: Literal["a", "b"] = "a"


class Movie(TypedDict):
    title: str
    year: int


class Draft(TypedDict, total=False):
    title: str
    words: int


class Review(TypedDict):
    movie: Movie
    stars: Annotated[int, Field(ge=1, le=5)]
    comment: NotRequired[str]


class Cat(BaseModel):
    pet_type: Literal["cat"]
    meows: int


class Dog(BaseModel):
    pet_type: Literal["dog"]
    barks: float


class Owner(BaseModel):
    pet: Union[Cat, Dog] = Field(discriminator="pet_type")


class Loose(BaseModel):
    pet: Union[Cat, Dog]


class Numbers(BaseModel):
    choice: Literal[1, 2, 3]
    flag: bool
    x: float
    maybe: Optional[float] = None


class Order(BaseModel):
    items: list[Address] = Field(min_length=1, max_length=2)
    note: Optional[list[str]] = None


class Keyed(BaseModel):
    scores: dict[Literal["a", "b"], int]


class Ids(BaseModel):
    request: UUID4
    ip: IPv4Address


class Unique(BaseModel):
    labels: set[str]


class Price(BaseModel):
    from decimal import Decimal as _Decimal

    amount: _Decimal


class Zip(BaseModel):
    zip: str = Field(pattern=r"^\d+$", max_length=5)


class Wait(BaseModel):
    wait: dt.timedelta


class Link(BaseModel):
    url: AnyUrl


class Host(BaseModel):
    address: IPvAnyAddress


class Lookahead(BaseModel):
    model_config = ConfigDict(regex_engine="python-re")

    password: str = Field(pattern=r"^(?=.*\d).{8,}$")


class Gap(BaseModel):
    low: int = Field(ge=10, le=5)


class A(BaseModel):
    b: B
    c: Optional[C] = None


class B(BaseModel):
    c: C
    n: int


class C(BaseModel):
    label: Literal["x", "y"]


A.model_rebuild()


def _reversed_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """The same schema with ``$defs`` in the opposite order (pydantic sorts them)."""
    return {**schema, "$defs": dict(reversed(list(schema["$defs"].items())))}


def _json(type_: Any) -> dict[str, Any]:
    if isinstance(type_, type) and issubclass(type_, BaseModel):
        return type_.model_json_schema()
    return TypeAdapter(type_).json_schema()


def _case(name: str, type_: Any, unsupported: tuple[str, str] | None = None) -> SchemaCase:
    return SchemaCase(name, _json(type_), type_, unsupported)


CASES: list[SchemaCase] = [
    _case("optional", Person),
    _case("union-literal", Shape),
    _case("enum-intenum", Paint),
    _case("nested", User),
    _case("list-min-max-items", Tags),
    _case("dict-str-int", Inventory),
    _case("dict-str-model", Directory),
    _case("datetime-date-time-uuid", Event),
    _case("email-like-pattern", Contact),
    _case("pattern-d", Year),
    _case("pattern-S", LooseEmail),
    _case("pattern-w-s", FullName),
    _case("pattern-D-W-class", Shorthands),
    _case("min-max-length", Lengths),
    _case("int-bounds", Bounds),
    _case("float-bounds", Ratios),
    _case("recursive-tree", TreeNode),
    _case("recursive-linked-list", LinkedNode),
    _case("tuples", Pair),
    _case("annotated", Annotated_),
    _case("defaults", Defaults),
    _case("typeddict", Movie),
    _case("typeddict-total-false", Draft),
    _case("typeddict-nested-notrequired", Review),
    _case("discriminated-union", Owner),
    _case("plain-union-of-models", Loose),
    _case("literal-int-bool-float", Numbers),
    _case("list-of-models-optional-list", Order),
    _case("dict-literal-keys", Keyed),
    _case("uuid4-ipv4", Ids),
    _case("defs-forward-refs", A),
    SchemaCase("defs-reversed-order", _reversed_defs(A.model_json_schema()), A),
    _case("bare-list-of-models", list[Address]),
    _case("bare-optional-int", Optional[int]),
    SchemaCase("decimal-number-or-string", _json(Price), Price, pydantic_exact=False),
    _case("multiple-of", Multiple, ("multipleOf", "#/properties/step/multipleOf")),
    _case("set-unique-items", Unique, ("uniqueItems", "#/properties/labels/uniqueItems")),
    _case("pattern-and-max-length", Zip, ("maxLength", "#/properties/zip/maxLength")),
    _case("timedelta-duration", Wait, ("format", "#/properties/wait/format")),
    _case("url", Link, ("format", "#/properties/url/format")),
    _case("ip-any", Host, ("format", "#/properties/address/format")),
    _case("lookahead-password", Lookahead, ("pattern", "#/properties/password/pattern")),
    _case("empty-range", Gap, ("maximum", "#/properties/low/maximum")),
]
if HAS_EMAIL_VALIDATOR:  # pragma: no cover - depends on the environment

    class Signup(BaseModel):
        email: EmailStr

    CASES.append(_case("emailstr", Signup))
