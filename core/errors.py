"""Domain-level validation errors, independent of any wire format.

Services collect every problem of an input (a caller wants all of them, not only the first) as
items `{loc, msg, type[, input]}` and raise `ValidationFailed`; the API layer renders them as
Polar's 422 body, the admin as form errors."""


class ValidationFailed(Exception):
    def __init__(self, items: list[dict]):
        self.items = items
        super().__init__("; ".join(f"{'.'.join(map(str, i['loc']))}: {i['msg']}" for i in items))

    @classmethod
    def single(cls, loc, msg: str, type_: str = "value_error"):
        errors = ErrorList()
        errors.add(loc, msg, type_)
        return cls(errors.items)


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

    def raise_if_any(self, error_class: type[ValidationFailed] = ValidationFailed) -> None:
        if self.items:
            raise error_class(self.items)
