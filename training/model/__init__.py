"""The model: feature spec -> inputs -> HuggingFace body (+ the user's history) -> next-item scores,
with the training tasks and losses that teach it. `next_item.NextItemModel` is its contract."""
