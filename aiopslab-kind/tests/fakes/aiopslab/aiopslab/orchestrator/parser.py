"""FAKE aiopslab.orchestrator.parser.ResponseParser, following the real
parser's rules (own code, same behaviour, quirks included):

- the reply must hold exactly ONE match of: three backticks, optional
  whitespace, a newline, the code, a newline, three backticks (non-greedy,
  across lines); else a format error;
- the code block is the lines between the first two lines containing three
  backticks;
- the API name is the text before the first "(";
- arguments are the text between the first "(" and the last ")": empty gives
  no arguments; for exec_shell a leading `command=` is dropped (every
  `command=` in it, as the real `str.replace`) and the rest must start and end
  with the same quote, which is stripped (with any repeats), then \\" and \\'
  are unescaped - so `exec_shell(command="ls")` is accepted and
  `exec_shell("ls", timeout=60)` is refused; other calls' arguments are read
  with `ast` (constants, lists, dicts, True/False/None; a positional
  tuple is read as a list);
- no parenthesis: "No API call found!".
"""

import ast
import re

from aiopslab.utils.status import ResponseParsingError

FENCE = "```"
_ONE_BLOCK = re.compile(r"```\s*\n(.*?)\n```", re.DOTALL)
_OUTSIDE_BLOCKS = re.compile(r"(?:```[\s\S]*?```)|(.*?)(?:(?=```)|$)", re.DOTALL)

FORMAT_HELP = """
Format validation failure. Put exactly one code block in your reply: a line with three backticks,
the call on its own line, and a line with three backticks. For example:
I should run:
```
exec_shell("ls")
```
"""


class ResponseParser:
    def validate(self, response):
        if len(_ONE_BLOCK.findall(response)) != 1:
            raise ResponseParsingError(FORMAT_HELP)

    def parse(self, response):
        self.validate(response)
        code_block = self.extract_codeblock(response)
        api_name = self.parse_api_name(code_block)
        args, kwargs = self.parse_args(code_block, is_shell_command=api_name == "exec_shell")
        return {
            "api_name": api_name,
            "args": args,
            "kwargs": kwargs,
            "context": self.extract_context(response),
        }

    def extract_codeblock(self, response):
        lines = response.split("\n")
        fences = [i for i, line in enumerate(lines) if FENCE in line]
        if len(fences) < 2:
            return ""
        return "\n".join(lines[fences[0] + 1 : fences[1]])

    def extract_context(self, response):
        return [text.strip() for text in _OUTSIDE_BLOCKS.findall(response) if text.strip()]

    def parse_api_name(self, code):
        paren = code.find("(")
        return code[:paren].strip() if paren != -1 else ""

    def parse_args(self, code, is_shell_command=False):
        opening, closing = code.find("("), code.rfind(")")
        if opening == -1 or closing == -1:
            raise ResponseParsingError("No API call found!")
        inside = code[opening + 1 : closing].strip()
        if not inside:
            return [], {}
        if is_shell_command:
            return [self._shell_command(inside)], {}
        try:
            call = ast.parse(f"func({inside})").body[0].value
            args = [self._argument(node) for node in call.args]
            kwargs = {keyword.arg: self._literal(keyword.value) for keyword in call.keywords}
        except Exception as e:  # noqa: BLE001 - every failure is a parsing error, as the real one
            raise ResponseParsingError(f"Error parsing response: {e}")
        return args, kwargs

    @staticmethod
    def _shell_command(inside):
        if inside.startswith("command="):
            inside = inside.replace("command=", "").strip()
        for quote in ('"', "'"):
            if inside.startswith(quote) and inside.endswith(quote):
                command = inside.strip(quote)
                return command.replace('\\"', '"').replace("\\'", "'")
        raise ResponseParsingError("Error when parsing response: commands must be quoted strings")

    def _argument(self, node):
        # A positional argument may be a tuple (read as a list); nested values may not.
        if isinstance(node, ast.Tuple):
            return [self._literal(item) for item in node.elts]
        return self._literal(node)

    def _literal(self, node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.List):
            return [self._literal(item) for item in node.elts]
        if isinstance(node, ast.Dict):
            return {self._literal(k): self._literal(v) for k, v in zip(node.keys, node.values)}
        if isinstance(node, ast.Name) and node.id in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[node.id]
        raise ValueError(f"Unsupported AST node type: {type(node)}")
