"""The policy pack.  Only this file constructs PolicyPack (it starts the
analyzer server); the rules live in guardrails.py, which tests import."""

from pulumi_policy import EnforcementLevel, PolicyPack

from guardrails import POLICIES

PolicyPack(name="automata-guardrails", enforcement_level=EnforcementLevel.MANDATORY, policies=POLICIES)
