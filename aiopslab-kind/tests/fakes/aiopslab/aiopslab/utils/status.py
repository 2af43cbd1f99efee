"""FAKE aiopslab.utils.status: the submission enum and the errors of the real
module, and its SessionPrint (prints only when config.yml says print_session).
Like the real module it reads config.yml at import."""

from enum import Enum

from aiopslab.config import Config
from aiopslab.paths import BASE_DIR

config = Config(BASE_DIR / "config.yml")


class SubmissionStatus(Enum):
    VALID_SUBMISSION = 1
    INVALID_SUBMISSION = 2


class InvalidActionError(Exception):
    def __init__(self, action_name):
        super().__init__(f"Invalid action: {action_name}")
        self.action_name = action_name


class ResponseParsingError(Exception):
    def __init__(self, message):
        super().__init__(f"Error parsing response: {message}")
        self.message = message


class SessionPrint:
    """Prints the agent's actions and the service's answers to stdout."""

    def __init__(self):
        self.enable_printing = config.get("print_session")

    def agent(self, action):
        if self.enable_printing:
            print(f"Agent:\n{action}")

    def service(self, response):
        if self.enable_printing:
            print(f"Service: {response}\n\n")

    def result(self, results):
        # The real one prints the results whatever print_session says.
        print(f"Results:\n{results}")
