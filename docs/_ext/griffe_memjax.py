"""Griffe extensions for memjax's API reference.

``SphinxRoles``: Sphinx roles in docstrings become checked cross-references. The docstrings
write references as Sphinx roles (``:func:`memjax.replay.uniform```,
``:class:`~memjax.train.TrainConfig```, ``:func:`one_copy``` for a name in scope). Each
role is looked up the way Python would see the name from the docstring's object: as a full
path, or in the enclosing class and module scopes (imports included). A role that names
nothing is a warning, so ``mkdocs build --strict`` fails on it. A role that resolves becomes
an optional autorefs link: a link where the reference renders the object, plain code where it
does not (a private module, say).

``GroupedArgs``: an ``Args:`` entry for several parameters at once (``env, env_params: a
gymnax environment``, a numpy-docstring habit some memjax docstrings have) becomes one entry
per parameter with the same description, so griffe checks each name against the signature.

``FieldComments``: a class attribute without a docstring gets its end-of-line comment as one,
so dataclass fields documented by a comment (``TrainConfig``'s, which ``memjax train --help``
also reads) appear in the reference with it.
"""

from __future__ import annotations

import html
import re

import griffe

ROLE = re.compile(r":(func|class|mod|meth|attr|data|obj|exc):`(~?)([\w.]+)`")
LOOKUP_ERRORS = (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError)


def lookup(obj: griffe.Object, name: str, collection) -> griffe.Object | None:
    """The object ``name`` means inside ``obj``'s docstring, or None."""
    scope = obj
    while scope is not None:
        try:
            return scope[name]
        except LOOKUP_ERRORS:
            scope = scope.parent
    try:
        return collection[name]
    except LOOKUP_ERRORS:
        return None


def resolve(obj: griffe.Object, name: str, role: str, collection) -> griffe.Object | None:
    """As ``lookup``, where a package attribute that an import in the package's
    ``__init__`` rebinds (``memjax.replay.uniform``: the function, not the submodule) is
    what the import binds, as in Python; griffe's tree keeps the submodule there."""
    found = lookup(obj, name, collection)
    if found is not None and found.is_module and role != "mod" and found.parent is not None:
        imported = found.parent.imports.get(found.name)
        if imported and imported != found.path:
            return lookup(obj, imported, collection)
    return found


def canonical(found: griffe.Object) -> str:
    try:
        return found.canonical_path
    except LOOKUP_ERRORS:
        return found.path


class SphinxRoles(griffe.Extension):
    """Rewrites the roles of every docstring of the loaded package."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs) -> None:
        for obj in walk(pkg):
            docstring = obj.docstring
            if docstring is None or ":`" not in docstring.value:
                continue

            def link(match, obj=obj, docstring=docstring):
                role, short, name = match.groups()
                found = resolve(obj, name, role, loader.modules_collection)
                if found is None:
                    griffe.logger.warning(
                        f"{obj.relative_filepath}:{docstring.lineno}: {match[0]} in the "
                        f"docstring of {obj.path} names no object"
                    )
                    return match[0]
                title = name.rsplit(".", 1)[-1] if short else name
                return (
                    f'<autoref identifier="{html.escape(canonical(found))}" optional>'
                    f"<code>{html.escape(title)}</code></autoref>"
                )

            docstring.value = ROLE.sub(link, docstring.value)


def walk(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from walk(member)


COMMENT = re.compile(r"\s#\s*(.+?)\s*$")


class FieldComments(griffe.Extension):
    """``x: int = 1  # what x is`` documents ``x``."""

    def on_attribute_instance(self, *, attr: griffe.Attribute, **kwargs) -> None:
        if attr.docstring is not None or not attr.parent or not attr.parent.is_class:
            return
        lines = attr.lines
        match = COMMENT.search(lines[-1]) if lines else None
        if match and not match[1].startswith(("noqa", "type:", "pragma")):
            attr.docstring = griffe.Docstring(match[1], lineno=attr.endlineno, parent=attr)


SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters|Keyword Args|Other Parameters):\s*$")
GROUPED = re.compile(r"^(\s+)(\w+(?:\s*,\s*\w+)+):\s?(.*)$")


def split_grouped_args(text: str) -> str:
    lines, out, i = text.splitlines(), [], 0
    in_args, item_indent = False, None
    while i < len(lines):
        line = lines[i]
        header = SECTION.match(line)
        if header:
            in_args, item_indent = True, None
            out.append(line)
            i += 1
            continue
        if in_args and line.strip() and item_indent is None:
            item_indent = len(line) - len(line.lstrip())
        if in_args and line.strip() and len(line) - len(line.lstrip()) < (item_indent or 0):
            in_args = False
        match = GROUPED.match(line) if in_args else None
        if match and len(match[1]) == item_indent:
            body = [match[3]]
            i += 1
            while i < len(lines) and (
                not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > item_indent
            ):
                if not lines[i].strip():
                    break
                body.append(lines[i])
                i += 1
            for name in re.split(r"\s*,\s*", match[2]):
                out.append(f"{match[1]}{name}: {body[0]}")
                out.extend(body[1:])
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


class GroupedArgs(griffe.Extension):
    """``a, b: description`` in Args -> ``a: description`` and ``b: description``."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs) -> None:
        for obj in walk(pkg):
            if obj.docstring is not None and "," in obj.docstring.value:
                obj.docstring.value = split_grouped_args(obj.docstring.value)
