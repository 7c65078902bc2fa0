"""Classes selected by name from the config: the one mechanism behind the registries of
training methods (`config.method`), networks (`config.model.name`) and metrics
(`DatasetMeta.metric`).

A module defines a subclass under `@REGISTRY.register('name')`; importing the module makes
the name selectable. Each registry's owner turns an unknown name into its own error, which
names the config key a user set.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar('T', bound=type)


class Registry(Generic[T]):
  """Subclasses of `base` by name.

  Args:
    kind: what the classes are, for messages ('method', 'network', 'metric').
    base: the class every registered one derives from.
  """

  def __init__(self, kind: str, base: T):
    self.kind = kind
    self.base = base
    self._classes: dict[str, T] = {}

  def register(self, name: str):
    """Class decorator: registers the class as `name` and sets its `name` attribute.

    The same class registered again (a module imported twice) is no error; another class under
    a taken name is.
    """
    def add(cls: T) -> T:
      if not (isinstance(cls, type) and issubclass(cls, self.base)):
        raise TypeError(f'register({name!r}) decorates {self.base.__name__} subclasses, got '
                        f'{cls!r}')
      known = self._classes.get(name)
      if known is not None and known.__qualname__ != cls.__qualname__:
        raise ValueError(f'a {self.kind} named {name!r} is already registered '
                         f'({known.__qualname__})')
      cls.name = name
      self._classes[name] = cls
      return cls
    return add

  def names(self) -> tuple[str, ...]:
    return tuple(sorted(self._classes))

  def get(self, name: str) -> T | None:
    """The class registered as `name`, or None."""
    return self._classes.get(name)
