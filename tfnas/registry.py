"""One small registry class used by every extension point (ops, spaces, datasets, ...)."""

from tfnas.errors import RegistryError


class Registry:
    """A name -> object mapping filled by a decorator.

    Example:
        >>> OPS = Registry("op")
        >>> @OPS.register("identity")
        ... def make_identity(): ...
        >>> OPS.get("identity") is make_identity
        True

    Args:
        kind: what the registry holds, used in error messages ("op", "search space").
    """

    def __init__(self, kind):
        self.kind = kind
        self._items = {}

    def register(self, name, obj=None):
        """Registers `obj` under `name`; usable as a decorator when `obj` is None.

        Raises:
            RegistryError: `name` is already registered.
        """
        if obj is None:
            return lambda o: self.register(name, o)
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._items:
            raise RegistryError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj
        return obj

    def get(self, name):
        """Returns the object registered as `name`.

        Raises:
            RegistryError: unknown name; the message lists the registered names.
        """
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise RegistryError(
                f"unknown {self.kind} {name!r}; registered: {', '.join(sorted(self._items))}"
            ) from None

    def names(self):
        return sorted(self._items)

    def __contains__(self, name):
        return name in self._items

    def __iter__(self):
        return iter(self.names())

    def __len__(self):
        return len(self._items)
