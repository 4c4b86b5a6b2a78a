//! The category tree as the API shows it: depth-first, each parent before
//! its children, siblings by position, with each node's depth and the names
//! from the root down to it.

use std::collections::HashMap;

use uuid::Uuid;

use crate::error::CatalogError;
use crate::store::Category;

/// A category with its place in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedCategory<'a> {
    /// The stored category.
    pub category: &'a Category,
    /// 0 for top-level categories.
    pub depth: u32,
    /// Names from the top level down to this category.
    pub path_names: Vec<&'a str>,
}

/// Orders `categories` depth-first. With `root`, only that subtree (the root
/// included); with `max_depth > 0`, only nodes at most that far below the
/// root (or below the top level without a root).
pub fn depth_first<'a>(
    categories: &'a [Category],
    root: Option<Uuid>,
    max_depth: u32,
) -> Result<Vec<PlacedCategory<'a>>, CatalogError> {
    let mut children: HashMap<Option<Uuid>, Vec<&Category>> = HashMap::new();
    for category in categories {
        children
            .entry(category.parent_id)
            .or_default()
            .push(category);
    }
    for siblings in children.values_mut() {
        siblings.sort_by_key(|category| (category.position, category.slug.as_str()));
    }
    let by_id: HashMap<Uuid, &Category> = categories
        .iter()
        .map(|category| (category.id, category))
        .collect();

    // Start nodes with their depth and the names of their ancestors.
    let starts: Vec<(&Category, u32, Vec<&str>)> = match root {
        None => children
            .get(&None)
            .map(|roots| {
                roots
                    .iter()
                    .map(|category| (*category, 0, Vec::new()))
                    .collect()
            })
            .unwrap_or_default(),
        Some(root_id) => {
            let category = by_id
                .get(&root_id)
                .ok_or_else(|| CatalogError::CategoryNotFound(root_id.to_string()))?;
            let mut ancestors = Vec::new();
            let mut parent = category.parent_id;
            // The tree is at most as deep as it has nodes; the bound guards a cycle.
            while let Some(parent_id) = parent.filter(|_| ancestors.len() < categories.len()) {
                match by_id.get(&parent_id) {
                    Some(node) => {
                        ancestors.push(node.name.as_str());
                        parent = node.parent_id;
                    }
                    None => break,
                }
            }
            ancestors.reverse();
            let depth = u32::try_from(ancestors.len()).unwrap_or(u32::MAX);
            vec![(*category, depth, ancestors)]
        }
    };

    let mut placed = Vec::with_capacity(categories.len());
    for (start, start_depth, ancestors) in starts {
        // Explicit stack instead of recursion: no depth limit on our stack.
        let mut stack = vec![(start, start_depth, ancestors)];
        while let Some((category, depth, mut names)) = stack.pop() {
            names.push(category.name.as_str());
            let below_start = depth - start_depth;
            if let Some(kids) = children.get(&Some(category.id))
                && (max_depth == 0 || below_start < max_depth)
                && placed.len() < categories.len()
            {
                for kid in kids.iter().rev() {
                    stack.push((*kid, depth + 1, names.clone()));
                }
            }
            placed.push(PlacedCategory {
                category,
                depth,
                path_names: names,
            });
        }
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn category(slug: &str, parent: Option<&Category>, position: u32) -> Category {
        Category {
            id: Uuid::now_v7(),
            slug: slug.to_owned(),
            parent_id: parent.map(|parent| parent.id),
            path: match parent {
                Some(parent) => format!("{}/{slug}", parent.path),
                None => slug.to_owned(),
            },
            name: slug.to_uppercase(),
            position,
        }
    }

    fn tree() -> Vec<Category> {
        let art = category("art", None, 2);
        let electronics = category("electronics", None, 1);
        let phones = category("phones", Some(&electronics), 2);
        let cameras = category("cameras", Some(&electronics), 1);
        let lenses = category("lenses", Some(&cameras), 1);
        vec![art, phones, lenses, electronics, cameras]
    }

    fn slugs(placed: &[PlacedCategory<'_>]) -> Vec<String> {
        placed
            .iter()
            .map(|node| node.category.slug.clone())
            .collect()
    }

    // Proves parents come before children and siblings follow their position.
    #[test]
    fn whole_tree_is_depth_first_by_position() {
        let categories = tree();
        let placed = depth_first(&categories, None, 0).unwrap();
        assert_eq!(
            slugs(&placed),
            ["electronics", "cameras", "lenses", "phones", "art"]
        );
        let lenses = &placed[2];
        assert_eq!(lenses.depth, 2);
        assert_eq!(lenses.path_names, ["ELECTRONICS", "CAMERAS", "LENSES"]);
    }

    // Proves a root selects its subtree and max_depth cuts below it.
    #[test]
    fn subtree_and_depth_limit() {
        let categories = tree();
        let electronics = categories
            .iter()
            .find(|c| c.slug == "electronics")
            .unwrap()
            .id;
        let placed = depth_first(&categories, Some(electronics), 1).unwrap();
        assert_eq!(slugs(&placed), ["electronics", "cameras", "phones"]);
        let cameras = categories.iter().find(|c| c.slug == "cameras").unwrap().id;
        let placed = depth_first(&categories, Some(cameras), 0).unwrap();
        assert_eq!(slugs(&placed), ["cameras", "lenses"]);
        assert_eq!(placed[1].path_names, ["ELECTRONICS", "CAMERAS", "LENSES"]);
    }

    // Proves an unknown root is NOT_FOUND, not an empty list.
    #[test]
    fn unknown_root_is_not_found() {
        let categories = tree();
        let error = depth_first(&categories, Some(Uuid::now_v7()), 0).unwrap_err();
        assert!(matches!(error, CatalogError::CategoryNotFound(_)));
    }
}
