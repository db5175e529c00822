"""Group planning (Moshpit grid), agreement on the plan, and its messages."""
