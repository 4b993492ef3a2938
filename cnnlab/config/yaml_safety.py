"""Reads the YAML a user gives cnnlab (config files, --set, --param and --optimizer values, run folders' config.yaml).

`yaml.safe_load` refuses Python objects but not an alias bomb: a kilobyte of nested anchors
and aliases (`&l1 [*l0, *l0, ...]`, "billion laughs") that composes to a hundred nodes yet
stands for hundreds of millions of values. PyYAML builds it cheaply, an alias being the same
object again, but every walk over it afterwards (validation, a copy, a message's repr) takes
minutes and gigabytes. So the composed document is measured before it is constructed: its
size once every alias is expanded must stay within a budget proportional to the text, with a
floor, or the text is refused in one line naming where it expands. Legitimate reuse (a block
of layers written once and aliased a few times) is far inside that budget.
"""

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from cnnlab.errors import ConfigError
from cnnlab.config.keypaths import format_path

NODES_PER_CHAR = 10  # text without aliases holds at most about one value per 2 characters: aliases may multiply it 20 times
MIN_NODES = 10_000  # and a short text may expand to this many values whatever its length
# Python refuses to turn an int of more than 4,300 digits into text (sys.get_int_max_str_digits), so an
# error message about one would itself fail; hex, octal and base-60 ints are built without that check.
MAX_INT_BITS = 14_000


class Loader(yaml.SafeLoader):
    """SafeLoader whose ints are ones Python can print: a longer one is a YAML error at its line."""

    def construct_yaml_int(self, node):
        try:
            value = super().construct_yaml_int(node)
        except ValueError:
            value = None
        if value is None or value.bit_length() > MAX_INT_BITS:
            raise ConstructorError(None, None, "an integer of more than 4,000 digits", node.start_mark)
        return value


Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_yaml_int)


def load_yaml(text, where="", at=()):
    """The text's YAML document as `yaml.safe_load` reads it, unless its aliases expand it past the budget.

    A syntax error is PyYAML's own error, for the caller to word; an expansion past the budget
    is a ConfigError whose path is `where` (the option, such as --set) and the config path
    `at` the text is the value of, followed by the path of the value that expands.
    """
    loader = Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_expansion(node, max(MIN_NODES, NODES_PER_CHAR * len(text)), text, where, at)
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigError(where.strip() or None, "the YAML is nested too deeply") from None
    finally:
        loader.dispose()


def check_expansion(root, budget, text, where, at):
    sizes, shared, endless = expanded_sizes(root, budget)
    if sizes[id(root)] <= budget:
        return
    path, node = locate(root, sizes, shared, endless, budget)
    label = " ".join(filter(None, [where.strip(), format_path(tuple(at) + tuple(path))])) or None
    line = f"line {node.start_mark.line + 1}: " if node.start_mark is not None and "\n" in text.strip() else ""
    if endless:
        raise ConfigError(label, f"{line}an alias inside its own anchor makes the value endless; write the value out")
    raise ConfigError(label, f"{line}its aliases expand it to more than {budget:,} values from {len(text):,} characters of YAML, "
                             "refused as an alias bomb; write the values out")


def children(node):
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, SequenceNode):
        return node.value
    return []


def expanded_sizes(root, budget):
    """Each node's size with its aliases expanded (capped past `budget`), by id; the nodes more than one place holds; those
    found inside themselves.

    Depth first without recursion, each node visited once: a node an alias repeats adds
    its size again at every place, not its nodes again. A node found inside itself (an
    alias within its own anchor) counts as past the budget.
    """
    over = budget + 1
    sizes, refs, entered = {}, {}, set()
    endless = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            entered.discard(key)
            total = 1
            for child in children(node):
                total += sizes.get(id(child), over)  # not sized yet: it is being sized, an ancestor
                if total > budget:
                    break
            sizes[key] = min(total, over)
            continue
        if key in sizes:
            continue
        if key in entered:
            endless.add(key)
            continue
        entered.add(key)
        stack.append((node, True))
        for child in children(node):
            refs[id(child)] = refs.get(id(child), 0) + 1
            stack.append((child, False))
    return sizes, {key for key, count in refs.items() if count > 1}, endless


def locate(root, sizes, shared, endless, budget):
    """The path of the deepest value past the budget that only one place holds (where the aliases multiply), and its line.

    The line is that of the value's key in a mapping, else of the value itself: an alias's
    node is its anchor's, written elsewhere.
    """
    path, node, line_of = [], root, root
    while True:
        step = largest_child(node, sizes, shared)
        if step is None or sizes[id(step[1])] <= budget or (id(step[1]) in shared and path and id(step[1]) not in endless):
            return path, line_of
        path.append(step[0])
        node, line_of = step[1], step[2]
        if id(node) in shared:
            return path, line_of


def largest_child(node, sizes, shared):
    """(key or index, child, the node whose line names it) of the child that expands most, one held once among equals."""
    if isinstance(node, MappingNode):
        steps = [(key.value if isinstance(key, ScalarNode) else "?", value, key) for key, value in node.value]
    elif isinstance(node, SequenceNode):
        steps = [(index, value, value) for index, value in enumerate(node.value)]
    else:
        return None
    return max(steps, key=lambda step: (sizes[id(step[1])], id(step[1]) not in shared), default=None)
