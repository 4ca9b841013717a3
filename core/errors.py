"""The one domain error, independent of any wire format.

A service that refuses a request raises `DomainError` (or an app's subclass of it, named for what
went wrong) carrying every problem it found — a caller wants all of them, not only the first. A
problem is `{loc, msg, type[, input]}` where `loc` names the field at fault as a path *inside the
input the service was given* (`["prices", 0, "unit_amount"]`, `["events", 3, "timestamp"]`; empty
when no single field is at fault) — never where that input came from. Only the API layer knows
that: it adds the location (`body`, `path`) and renders Polar's 422; the admin shows the messages
as form errors."""


class DomainError(Exception):
    type = "value_error"

    def __init__(self, problems: "str | list[dict]", *, field=(), type_: str | None = None):
        if isinstance(problems, str):
            problems = [{"loc": list(field), "msg": problems, "type": type_ or self.type}]
        self.items = list(problems)
        super().__init__("; ".join(_describe(item) for item in self.items))

    @classmethod
    def single(cls, field, msg: str, type_: str | None = None) -> "DomainError":
        return cls(msg, field=field, type_=type_)

    @property
    def message(self) -> str:
        return self.items[0]["msg"] if self.items else ""

    @property
    def field(self) -> tuple:
        return tuple(self.items[0]["loc"]) if self.items else ()


def _describe(item: dict) -> str:
    where = ".".join(map(str, item["loc"]))
    return f"{where}: {item['msg']}" if where else item["msg"]


class ErrorList:
    """Collects the problems of one input."""

    def __init__(self):
        self.items: list[dict] = []

    def add(self, loc, msg: str, type_: str = "value_error", input_=None) -> None:
        item = {"loc": list(loc), "msg": msg, "type": type_}
        if input_ is not None and isinstance(input_, str | int | float | bool):
            item["input"] = input_
        self.items.append(item)

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self, error_class: type[Exception] = DomainError) -> None:
        if self.items:
            raise error_class(self.items)
